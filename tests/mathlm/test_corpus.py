"""monosemantic.mathlm.corpus against the reference reading in tests/mathlm_reference.py, written from
the text alone: every answer recomputed with Fraction / Decimal / integer arithmetic, numbers in words
read with a speller of 0-99 of our own (not language.py's tables), trigonometry evaluated with `math`,
and the role of every token derived from the parsed text. Then the statistics the corpus promises: the
share of `≈`, the ASCII aliases, the held-out split by canonical problem."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest
from mathlm_reference import LANGS, SYMBOLS, references, samples, spell

from monosemantic.mathlm.corpus import CATEGORIES, MathCorpus, Role, generate, split_of, token_roles
from monosemantic.mathlm.tokenizer import build_tokenizer


def test_the_reference_speller_by_hand():
    assert [spell(n, "fr") for n in (21, 70, 71, 77, 80, 81, 91, 99)] == [
        "vingt et un",
        "soixante-dix",
        "soixante et onze",
        "soixante-dix-sept",
        "quatre-vingts",
        "quatre-vingt-un",
        "quatre-vingt-onze",
        "quatre-vingt-dix-neuf",
    ]
    assert [spell(n, "es") for n in (16, 22, 31, 99)] == ["dieciséis", "veintidós", "treinta y uno", "noventa y nueve"]
    assert [spell(n, "en") for n in (0, 19, 40, 42)] == ["zero", "nineteen", "forty", "forty-two"]


def test_every_answer_is_correct_and_the_metadata_agrees():
    for s, ref in zip(samples(), references()):
        assert ref.text == s.text, f"{s.text!r}: the correct text is {ref.text!r}"  # so the answer is right
        assert s.answer == ref.answer and s.prompt + s.completion == s.text, s
        assert (s.operation, s.language, s.exact, s.form) == (ref.operation, ref.language, ref.exact, ref.form), s
        if s.category != ref.category:
            # a fraction whose operands happen to be whole numbers (4/2 × 3 = 6) reads as arithmetic
            a, b = map(int, re.findall(r"\d+", s.text)[:2])
            assert s.category == "fraction" and s.operation != "div" and max(a, b) <= 4, s


def test_every_category_and_kind_of_statement_occurs():
    kinds = Counter((s.category, s.operation, s.exact) for s in samples())
    assert {c for c, _, _ in kinds} == set(CATEGORIES)
    for kind in [("approx", op, False) for op in ("div", "sqrt", "const")] + [("trig", "identity", True)]:
        assert kinds[kind] > 0, kind
    for kind in [("trig", "value", True), ("trig", "value", False), ("fraction", "simplify", True)]:
        assert kinds[kind] > 0, kind
    for lang in LANGS:
        assert kinds[(f"digits_{lang}", "div", False)] > 0 and kinds[(f"digits_{lang}", "div", True)] > 0
        assert {op for c, op, _ in kinds if c == f"words_{lang}"} == {"add", "sub", "mul"}
    assert any(s.category == "div" and "." in s.answer for s in samples())  # 7 ÷ 4 = 1.75
    assert {s.language for s in samples()} == {"symbols", *LANGS}


def test_samples_are_a_pure_function_of_seed_and_index():
    assert generate(3, 17) == generate(3, 17)
    assert [generate(3, i).text for i in range(20)] != [generate(4, i).text for i in range(20)]


def test_corpus_resumes_at_an_index():
    full = list(MathCorpus("train").documents(limit=50))
    assert list(MathCorpus("train").documents(start=full[30].id, limit=20)) == full[30:]
    assert MathCorpus("train").sample(full[7].id) == full[7]


# ---- token roles ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_every_token_has_the_role_its_text_implies(tok):
    seen_kinds: Counter = Counter()
    for s, ref in zip(samples(), references()):
        tokens = tok.convert_ids_to_tokens(tok(s.text, add_special_tokens=False)["input_ids"])
        assert "".join(tokens) == s.text  # the corpus never needs byte fallback
        piece_of = [i for i, (piece, _) in enumerate(ref.pieces) for _ in piece]  # character -> piece
        roles = token_roles(s, tok)
        assert roles[0] == Role("bos") and roles[-1] == Role("eos") and len(roles) == len(tokens) + 2
        assert len(roles) <= 64  # BOS + text + EOS fit the model's context
        start = 0
        for token, role in zip(tokens, roles[1:-1]):
            pieces = set(piece_of[start : start + len(token)])
            assert len(pieces) == 1, f"{s.text!r}: token {token!r} spans pieces {pieces}"
            expected = ref.pieces[pieces.pop()][1]
            assert role.as_dict() == expected, f"{s.text!r} token {token!r} at {start}"
            seen_kinds[role.kind] += 1
            start += len(token)
    # every kind the corpus writes was checked (operand signs and points: no operand is negative or decimal)
    assert set(seen_kinds) == {
        *("operand_digit", "operator", "operator_word", "relation", "relation_word", "answer_digit", "answer_point"),
        *("answer_sign", "answer_relation", "number_word", "number_joiner", "space", "name", "pronoun", "object"),
        *("word", "punctuation", "variable", "function", "constant", "fraction_bar", "power", "root", "versus"),
    }


def test_role_at_and_describe(tok):
    s = generate(0, 1)
    assert s.text == "615 + 280 = 895"
    assert s.role_at(1) == Role("operand_digit", "add", operand=1, place="tens", value=615)
    assert s.role_at(len(s.text) - 3).describe() == (
        "answer_digit operation=add operand=0 place=hundreds value=895 exact=True"
    )
    with pytest.raises(IndexError, match="outside the text"):
        s.role_at(len(s.text))


# ---- corpus statistics ---------------------------------------------------------------------------


def test_approximate_relations_are_a_quarter_to_a_half():
    relations = [exact for ref in references() for exact in ref.relations]
    share = relations.count(False) / len(relations)
    assert 0.25 <= share <= 0.5, share


def test_ascii_operators_all_occur_in_their_share():
    operators = Counter(char for ref in references() for char in ref.operators)
    assert all(operators[c] > 20 for c in "-*x/"), operators
    aliased = sum(operators[c] for c in "−×÷-*x/")
    assert 0.35 < sum(operators[c] for c in "-*x/") / aliased < 0.45  # ASCII_SHARE = 0.4


ASCII_OPERATOR = re.compile(r"(?<=[\w)] )([-*x/])(?= [\w(])")  # spaced, after an operand: not ', x = 4'


def canonical(prompt: str) -> str:
    return ASCII_OPERATOR.sub(lambda m: {"-": "−", "*": "×", "x": "×", "/": "÷"}[m.group(1)], prompt)


def test_the_held_out_split_is_by_canonical_problem():
    splits: dict[str, set[str]] = defaultdict(set)
    texts: dict[str, set[str]] = defaultdict(set)
    for s in samples():
        key = canonical(s.prompt)
        assert key == s.canonical_prompt()
        splits[key].add(split_of(s))
        texts[key].add(s.prompt)
    assert all(len(sides) == 1 for sides in splits.values())  # no problem on both sides, in any form
    assert sum(len(t) > 1 for t in texts.values()) > 100  # many problems occur in both forms
    held = sum("heldout" in sides for sides in splits.values()) / len(splits)
    assert 0.04 < held < 0.06, held  # of about 5000 distinct problems
    documents = sum(split_of(s) == "heldout" for s in samples()) / len(samples())
    assert 0.03 < documents < 0.07, documents


def test_the_splits_partition_the_stream():
    held = list(MathCorpus("heldout").documents(limit=40))
    train = list(MathCorpus("train").documents(limit=held[-1].id + 1 - len(held)))
    assert all(split_of(s) == "heldout" for s in held) and all(split_of(s) == "train" for s in train)
    assert sorted(s.id for s in held + train) == list(range(held[-1].id + 1))  # each document in one split
    assert not {canonical(s.prompt) for s in held} & {canonical(s.prompt) for s in train}


def test_with_form_round_trips_and_relabels_the_operators():
    aliased = [s for s in samples() if any(c in s.text for c in "−×÷-*/") and s.category != "trig"]
    changed = 0
    for s in aliased:
        symbol = s.with_form("symbol")
        assert symbol.with_form("ascii").with_form("symbol") == symbol
        ascii_form = symbol.with_form("ascii")
        if ascii_form is symbol:
            continue  # '+' only, or '/' of fractions: nothing to rewrite
        changed += 1
        assert canonical(ascii_form.text) == symbol.text and ascii_form.form == "ascii" and symbol.form == "symbol"
        assert ascii_form.canonical_prompt() == symbol.prompt == s.canonical_prompt()
        assert [sp.role.form for sp in ascii_form.spans if sp.role.kind == "operator"] == [
            "ascii" if SYMBOLS[ascii_form.text[sp.start]][1] == "ascii" else "symbol"
            for sp in ascii_form.spans
            if sp.role.kind == "operator"
        ]
    assert changed > 1000
    words = next(s for s in samples() if s.category == "words_en")
    assert words.with_form("ascii") is words
    with pytest.raises(ValueError, match="form must be 'symbol' or 'ascii', got 'word'"):
        words.with_form("word")


@pytest.mark.slow
def test_the_large_categories_have_a_thousand_distinct_held_out_problems():
    """The evaluation draws distinct held-out problems; the categories with many problems give it
    1000 of each within its scan (about a minute: 330 000 documents)."""
    from monosemantic.mathlm.evaluate import heldout_samples

    chosen = Counter(s.category for s in heldout_samples(1000, max_documents=330_000))
    assert all(chosen[c] >= 1000 for c in ("add_3d", "sub_3d", "estimate")), chosen
