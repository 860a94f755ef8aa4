"""Token roles of any corpus: the ground truth that concept labels are scored against.

The built-in math corpus gives every character its role from the generator (`mathlm/sample.py`).
Any `.jsonl` corpus can do the same with a field `roles` beside `text`: a list of character spans,
each with its role,

    {"text": "3 + 4 = 7",
     "roles": [{"start": 0, "end": 1, "role": {"kind": "operand_digit", "place": "units"}},
               {"start": 2, "end": 3, "role": {"kind": "operator", "operation": "addition"}},
               {"start": 6, "end": 7, "role": {"kind": "relation", "exact": "exact"}},
               {"start": 8, "end": 9, "role": {"kind": "answer_digit", "place": "units", "answer_start": true}}]}

- `start`, `end`: character offsets into `text` (Python string indices, i.e. Unicode code points),
  0 <= start < end <= len(text); spans must not overlap; characters in no span have no role.
- `role`: an object with a non-empty string `kind` and any further attributes whose values are
  strings, integers or booleans. A concept is a kind ("relation") or a kind with one attribute
  ("relation, exact"); `language` names the token's natural language (for the multilingual flag);
  `answer_start: true` marks the first token of an answer (for the output-side rule "the next token
  is the answer's first token").

A token's role is the role of the character its offset starts at (as for the math corpus), so spans
work with any fast tokenizer; special tokens (BOS, EOS) have none.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from monosemantic.errors import MonosemanticError

ROLE_VALUE_TYPES = (str, int, bool)


class RoleFormatError(MonosemanticError, ValueError):
    """A `roles` field that does not follow the format above."""


@dataclass(frozen=True)
class RoleSpan:
    start: int
    end: int
    role: tuple[tuple[str, object], ...]  # (attribute, value) pairs, "kind" first: hashable, cheap to share

    def as_dict(self) -> dict:
        return dict(self.role)


def parse_roles(value: object, text: str, where: str) -> tuple[RoleSpan, ...]:
    """The spans of a `roles` field, checked; `where` names the record in errors ('corpus.jsonl:3')."""
    if not isinstance(value, list):
        raise RoleFormatError(f"{where}: 'roles' must be a list of spans, got {type(value).__name__}")
    spans = []
    for n, item in enumerate(value):
        at = f"{where}: roles[{n}]"
        if not isinstance(item, dict) or set(item) != {"start", "end", "role"}:
            raise RoleFormatError(f'{at}: expected {{"start": int, "end": int, "role": {{"kind": ...}}}}, got {item!r}')
        start, end, role = item["start"], item["end"], item["role"]
        if not all(type(v) is int for v in (start, end)) or not 0 <= start < end <= len(text):
            raise RoleFormatError(
                f"{at}: start {start!r} and end {end!r} must be integers with 0 <= start < end <= {len(text)} "
                "(the text's length in characters)"
            )
        spans.append(RoleSpan(start, end, _role(role, at)))
    spans.sort(key=lambda s: s.start)
    for a, b in zip(spans, spans[1:]):
        if b.start < a.end:
            raise RoleFormatError(f"{where}: role spans [{a.start}, {a.end}) and [{b.start}, {b.end}) overlap")
    return tuple(spans)


def _role(role: object, at: str) -> tuple[tuple[str, object], ...]:
    if not isinstance(role, dict) or not isinstance(role.get("kind"), str) or not role["kind"]:
        raise RoleFormatError(f"{at}: 'role' must be an object with a non-empty string 'kind', got {role!r}")
    bad = [k for k, v in role.items() if not isinstance(v, ROLE_VALUE_TYPES)]
    if bad:
        raise RoleFormatError(f"{at}: role attribute {bad[0]!r} must be a string, integer or boolean")
    return (("kind", role["kind"]), *sorted((k, v) for k, v in role.items() if k != "kind"))


def span_token_roles(text: str, spans: tuple[RoleSpan, ...], tokenizer) -> list[tuple | None]:
    """The role of every token of `text` as `data.corpora.encode` numbers them (BOS first, EOS last
    where the tokenizer has them), as `RoleSpan.role` pairs: the role of the span its first character
    lies in, None for special tokens and characters in no span."""
    if not getattr(tokenizer, "is_fast", False):
        raise RoleFormatError("token roles need a fast tokenizer (one that returns character offsets)")
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    starts = [s.start for s in spans]
    roles: list[tuple | None] = []
    for (start, _), special in zip(enc["offset_mapping"], enc["special_tokens_mask"]):
        i = bisect.bisect_right(starts, start) - 1  # the last span starting at or before `start`
        roles.append(None if special or i < 0 or start >= spans[i].end else spans[i].role)
    ids = enc["input_ids"]
    if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        roles.insert(0, None)
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        roles.append(None)
    return roles
