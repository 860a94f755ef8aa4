"""When a label rule holds on a token, read from the rule's JSON form (`analysis/label_text.py`) on one
document: the brute-force reference of the label tests, written from the rules' definitions."""


def token_class(text: str) -> str | None:
    """digit / space / word / symbol, as the README defines the token classes."""
    if not text:
        return None
    if text.isspace():
        return "space"
    core = text.strip()
    if core.isdigit():
        return "digit"
    return "word" if core.isalpha() else "symbol"


def has_role(want: dict, role: dict | None) -> bool:
    return role is not None and all(role.get(k) == v for k, v in want.items())


def holds(rule: dict, ids: list[int], roles: list, meta: dict, pos: int, vocab: list[str], specials: set) -> bool:
    """Does `rule` hold on token `pos` of a document of token `ids` (BOS first, EOS last) with
    token `roles` (dicts or None, by position; None for a document without roles) and metadata?"""
    kind, token = rule["kind"], ids[pos]
    after = ids[pos + 1] if pos + 1 < len(ids) else None
    role = roles[pos] if roles else None
    next_role = roles[pos + 1] if roles and pos + 1 < len(roles) else None
    if kind in ("token", "2-gram", "3-gram"):
        n = len(rule["tokens"])
        return [ids[p] if p >= 0 else len(vocab) for p in range(pos - n + 1, pos + 1)] == rule["tokens"]
    if kind == "any of":
        return token in rule["tokens"]
    if kind == "class":
        return token not in specials and token_class(vocab[token]) == rule["class"]
    if kind == "next class":
        return after is not None and after not in specials and token_class(vocab[after]) == rule["class"]
    if kind == "next token":
        return after == rule["token"]
    if kind == "concept":
        return has_role(rule["role"], role)
    if kind == "concept+token":
        return has_role(rule["role"], role) and token == rule["token"]
    if kind == "next concept":
        return has_role(rule["role"], next_role)
    if kind == "meta":
        return meta.get(rule["field"]) == rule["value"]
    if kind == "position":
        return pos - 1 < rule["first"]  # position 0 is BOS
    raise ValueError(f"unknown rule kind {kind!r}")
