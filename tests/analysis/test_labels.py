"""Label rules, counted by hand: precision = P(rule | fires) and recall = P(fires | rule) on held-out
tokens (the swap fix), and, on documents with token roles whose latents fire as constructed here,
concept, concept+token, output-side and position rules, de-duplication, the floors, "dense", the
multilingual flag and the labels' words."""

import json

import pytest
import torch

from monosemantic.analysis.concepts import LabelInputs
from monosemantic.analysis.label_text import Describer, label_fields
from monosemantic.analysis.labels import (
    MAX_LANGUAGES,
    KeySpace,
    LabelStats,
    Names,
    Scored,
    TokenRules,
    choose_labels,
)
from monosemantic.data.corpora import Document, encode, kept_tokens, pack
from monosemantic.data.roles import parse_roles
from monosemantic.mathlm.tokenizer import build_tokenizer

BOS, PAD = 0, 9


def rows(*token_rows):
    width = max(len(tokens) for _, tokens in token_rows)
    ids = torch.full((len(token_rows), width), PAD)
    docs = torch.full((len(token_rows), width), -1)
    for r, (doc, tokens) in enumerate(token_rows):
        ids[r, : len(tokens)] = torch.tensor(tokens)
        docs[r, : len(tokens)] = doc
    return ids, docs, (docs >= 0) & (ids != BOS)


def feed(stats, space, names, languages, token_rows, fires_on):
    """Rules of raw token rows: n-grams and the document's language (no next token, no roles, no
    position rule: index 99); `fires_on`: (row, col) cells where latent 0 fires."""
    ids, docs, kept = token_rows
    ngrams = space.ngram_keys(ids, docs, kept)
    lang = [[space.named_offset + names.id("meta:language", languages[d])] for d in docs[kept].tolist()]
    keys = torch.cat([ngrams, torch.full((ngrams.shape[0], 1), -1), torch.tensor(lang)], 1)
    n = keys.shape[0]
    rules = TokenRules(keys, torch.full((n,), 99), torch.full((n,), MAX_LANGUAGES), torch.ones(n, dtype=torch.bool))
    cells = torch.nonzero(kept).tolist()
    tok = torch.tensor([cells.index([r, c]) for r, c in fires_on])
    stats.update(rules, tok, torch.zeros_like(tok))


def candidate(scored, describer, i, want: dict) -> int:
    """The index of latent i's candidate whose JSON rule is `want`."""
    for c in range(scored.valid.shape[1]):
        if scored.valid[i, c] and describer.describe(scored.rule(i, c))[2] == want:
            return c
    raise AssertionError(f"latent {i} has no candidate {want}")


def test_precision_is_p_rule_given_fires_and_recall_p_fires_given_rule():
    space, names = KeySpace(10, 1), Names()
    languages = {0: "en", 1: "es", 10: "en", 11: "es", 12: "en", 13: "en"}
    stats = LabelStats(1, space, names, fit_tokens=8, bos=BOS)
    # fit: fires on '5' three times and on '6' twice
    fit = rows((0, [BOS, 3, 5, 4, 5, 6]), (1, [BOS, 5, 6, 2]))
    feed(stats, space, names, languages, fit, [(0, 2), (0, 4), (0, 5), (1, 1), (1, 2)])
    assert not stats.fitting
    held = rows((10, [BOS, 3, 5, 4, 5]), (11, [BOS, 5, 6, 5]))
    feed(stats, space, names, languages, held, [(0, 2), (0, 4), (1, 1), (1, 2)])
    more = rows((12, [BOS, 5, 5, 5, 6, 1]), (13, [BOS, 1, 1, 1]))
    feed(stats, space, names, languages, more, [(0, 1), (0, 2), (0, 3), (0, 4)])
    s, describe = stats.scored(), Describer([str(t) for t in range(10)], space, names)
    # held-out: tokens 3 5 4 5 | 5 6 5 | 5 5 5 6 1 | 1 1 1 ; fires on 5 5 | 5 6 | 5 5 5 6 -> 8 firings
    assert s.fires.tolist() == [8] and s.tokens == 15
    c = candidate(s, describe, 0, {"kind": "token", "tokens": [5]})  # '5' occurs 7 times, 6 of them firing
    assert (s.support[0, c], s.hits[0, c]) == (7, 6)
    assert s.precision[0, c].item() == pytest.approx(6 / 8) and s.recall[0, c].item() == pytest.approx(6 / 7)
    c = candidate(s, describe, 0, {"kind": "any of", "tokens": [5, 6]})  # 9 occurrences, 8 firing
    assert s.precision[0, c].item() == pytest.approx(8 / 8) and s.recall[0, c].item() == pytest.approx(8 / 9)
    c = candidate(s, describe, 0, {"kind": "2-gram", "tokens": [5, 6]})  # twice, both firing
    assert (s.support[0, c], s.hits[0, c]) == (2, 2) and s.precision[0, c].item() == pytest.approx(2 / 8)
    c = candidate(s, describe, 0, {"kind": "meta", "field": "language", "value": "es"})  # doc 11: 3 tokens, 2 firing
    assert s.precision[0, c].item() == pytest.approx(2 / 8) and s.recall[0, c].item() == pytest.approx(2 / 3)
    starts = [describe.describe(s.rule(0, c))[2] for c in range(s.valid.shape[1]) if s.valid[0, c]]
    assert not any(BOS in r.get("tokens", []) for r in starts)  # "<bos>5" is no candidate


# ---- documents with token roles -------------------------------------------------------------------

SP = {"kind": "space"}
EQ = {"kind": "relation", "exact": "exact"}
APPROX = {"kind": "relation", "exact": "approximate"}
ASSIGN = {"kind": "assignment"}
ADD = {"kind": "operator", "operation": "addition"}
MUL = {"kind": "operator", "operation": "multiplication"}
WORDS = {"times": {**MUL, "language": "English"}, "por": {**MUL, "language": "Spanish"}, "×": MUL}


def digits(n: int, kind: str, first_answer: bool = False) -> list:
    out = [(d, {"kind": kind}) for d in str(n)]
    if first_answer:
        out[0] = (out[0][0], {"kind": kind, "answer_start": True})
    return out


def sum_doc(a, op, b, relation, answer) -> list:
    """`a op b rel answer` as (token text, role) pieces, one token each."""
    rel = {"=": EQ, "≈": APPROX, "equals": EQ}[relation]
    return [
        *digits(a, "operand_digit"),
        (" ", SP),
        *([(op, WORDS.get(op, ADD)), (" ", SP), *digits(b, "operand_digit"), (" ", SP)] if op else []),
        (relation, rel),
        (" ", SP),
        *digits(answer, "answer_digit", first_answer=True),
    ]


def assign_doc(x, y) -> list:
    return [(x, {"kind": "variable"}), (" ", SP), ("=", ASSIGN), (" ", SP), (y, {"kind": "variable"})]


FIT = (
    [sum_doc(i, "+", 1, "=", i + 1) for i in range(30, 36)]
    + [sum_doc(i, "×", 2, "=", 2 * i) for i in (2, 3, 4)]
    + [sum_doc(i, "times", 2, "=", 2 * i) for i in (6, 7)]
    + [sum_doc(8, "por", 2, "=", 16), assign_doc("x", "y"), sum_doc(9, None, None, "equals", 9)]
)
HELD = (
    [sum_doc(i, "+", 1, "=", i + 1) for i in range(10, 22)]  # 12
    + [sum_doc(i, op, 2, "=", 2 * i) for op in ("times", "por") for i in (2, 3, 4, 5)]  # 8
    + [sum_doc(i, "×", 2, "=", 2 * i) for i in (6, 7, 8, 9)]  # 4
    + [sum_doc(i, None, None, "equals", i) for i in (1, 2, 3)]  # 3
    + [assign_doc("a", "b"), assign_doc("b", "c"), assign_doc("c", "d")]  # 3
    + [sum_doc(5, "+", 1, "≈", 7), sum_doc(6, "+", 1, "≈", 8)]  # 2
)
REPEATS = [sum_doc(10, "+", 1, "=", 11), sum_doc(30, "+", 1, "=", 31)]  # a held-out text again, a fit text again


def document(i: int, pieces: list) -> Document:
    """A document as a .jsonl record with `roles` would give it."""
    text, spans = "", []
    for piece, role in pieces:
        spans.append({"start": len(text), "end": len(text) + len(piece), "role": role})
        text += piece
    return Document(i, text, roles=parse_roles(spans, text, f"doc {i}"))


def fires(piece: str, role: dict | None, index: int, next_role: dict | None) -> list[bool]:
    """Latents 0-5: exact `=`; the space before the answer; the document's first token; multiplication
    in any form; `x` (in the fit part only); every token."""
    return [
        piece == "=" and role == EQ,
        piece == " " and bool(next_role and next_role.get("answer_start")),
        index == 0,
        bool(role) and role.get("operation") == "multiplication",
        piece == "x",
        True,
    ]


@pytest.fixture(scope="module")
def labelled():
    tok = build_tokenizer()
    vocab = [tok.decode([i]) for i in range(len(tok))]
    space, names = KeySpace(len(vocab), 6), Names()
    inputs = LabelInputs(space, names, tok, vocab)
    docs = {i: document(i, p) for i, p in enumerate(FIT + HELD + REPEATS)}
    pieces = dict(enumerate(FIT + HELD + REPEATS))
    for i, d in docs.items():
        assert len(encode(tok, d.text)) == len(pieces[i]) + 2, d.text  # BOS, one token per piece, EOS
    fit_tokens = sum(len(p) + 1 for p in FIT)
    stats = LabelStats(6, space, names, fit_tokens, bos=tok.bos_token_id)
    total = torch.zeros(6)

    def read(ids):
        for i in ids:
            inputs.add(docs[i])
            yield docs[i]

    for part in (range(len(FIT)), range(len(FIT), len(docs))):
        for batch in pack(read(part), tok, 64, 256):
            kept = kept_tokens(batch, tok)
            z = []
            for d, p in zip(batch.doc_ids[kept].tolist(), batch.positions[kept].tolist()):
                doc = pieces[d] + [("", None)]  # EOS: no role
                z.append(fires(*doc[p - 1], p - 1, doc[p][1] if p < len(doc) else None))
            z = torch.tensor(z, dtype=torch.float)
            tok_i, lat = torch.nonzero(z, as_tuple=True)
            stats.update(inputs.rules(batch, kept), tok_i, lat)
            total += z.sum(0)
        assert not stats.fitting
    describer = Describer(vocab, space, names)
    scored = stats.scored()
    density = (total / sum(len(p) + 1 for p in pieces.values())).tolist()
    return scored, describer, tok, label_fields(describer, scored, density, inputs.languages)


def test_held_out_tokens_count_each_text_once(labelled):
    scored, *_ = labelled
    assert scored.tokens == sum(len(p) + 1 for p in HELD)  # with EOS; the two repeated texts not counted
    # latent 0 fires on the exact `=` of 12 + 8 + 4 held-out sums (24), not on those of the repeats
    assert scored.fires[0] == 24


def test_concept_and_token_rules_by_hand(labelled):
    scored, describer, tok, _ = labelled
    eq = tok.convert_tokens_to_ids("=")
    # `=` occurs 24 times as an exact relation and 3 times as an assignment
    c = candidate(scored, describer, 0, {"kind": "token", "tokens": [eq]})
    assert (scored.support[0, c], scored.hits[0, c]) == (27, 24)
    assert scored.precision[0, c] == 1 and scored.recall[0, c].item() == pytest.approx(24 / 27)
    # the exact relation holds on those 24 `=` and on 3 "equals"
    c = candidate(scored, describer, 0, {"kind": "concept", "role": {"kind": "relation", "exact": "exact"}})
    assert (scored.support[0, c], scored.hits[0, c]) == (27, 24)
    c = candidate(
        scored, describer, 0, {"kind": "concept+token", "role": {"kind": "relation", "exact": "exact"}, "token": eq}
    )
    assert (scored.support[0, c], scored.hits[0, c]) == (24, 24)
    # latent 3: the 12 multiplication operators (× 4, times 4, por 4) of 12 + 12 + 2 operators
    c = candidate(scored, describer, 3, {"kind": "concept", "role": {"kind": "operator"}})
    assert (scored.support[3, c], scored.hits[3, c]) == (26, 12)
    assert scored.precision[3, c] == 1 and scored.recall[3, c].item() == pytest.approx(12 / 26)


def test_output_side_and_position_rules_by_hand(labelled):
    scored, describer, *_ = labelled
    # the space before the answer: 29 held-out documents have an answer
    want = {"kind": "next concept", "role": {"kind": "answer_digit", "answer_start": True}}
    c = candidate(scored, describer, 1, want)
    assert (scored.support[1, c], scored.hits[1, c], scored.fires[1]) == (29, 29, 29)
    c = candidate(scored, describer, 1, {"kind": "next concept", "role": {"kind": "answer_digit"}})
    assert scored.support[1, c] == 29 + 12 + 2 + 4  # before any answer digit: also the 2-digit answers' first digits
    # the first token: one per held-out document; the first two: two per document
    c = candidate(scored, describer, 2, {"kind": "position", "first": 1})
    assert (scored.support[2, c], scored.hits[2, c]) == (32, 32)
    c = candidate(scored, describer, 2, {"kind": "position", "first": 2})
    assert (scored.support[2, c], scored.hits[2, c]) == (64, 32) and scored.recall[2, c] == 0.5


def test_labels_are_concepts_with_floors_dense_and_the_multilingual_flag(labelled):
    _, _, tok, fields = labelled
    eq = tok.convert_tokens_to_ids("=")
    assert fields[0]["label"] == "relation, exact (=)" and fields[0]["label_kind"] == "concept+token"
    assert json.loads(fields[0]["rule"]) == {"kind": "concept+token", "role": EQ, "token": eq}
    assert (fields[0]["precision"], fields[0]["recall"], fields[0]["support"]) == (1.0, 1.0, 24)
    assert fields[0]["multilingual"] is False  # a concept+token label is one token
    assert fields[1]["label"] == "next token: answer digit, first token of the answer"
    assert fields[2]["label"] == "first token of a document" and fields[2]["label_kind"] == "position"
    assert fields[3]["label"] == "operator, multiplication, any language: ×, times, por"
    assert fields[3]["multilingual"] is True and json.loads(fields[3]["languages"]) == {"English": 4, "Spanish": 4}
    assert fields[3]["concept"] == "operator, multiplication"
    assert fields[4]["label"] is None  # never fires on held-out text: "no label"
    assert fields[5]["label"] == "dense (fires on 100% of tokens)" and fields[5]["precision"] is None


def test_a_label_needs_support_firings_precision_and_lift():
    """Latents 0-3 each have one candidate that misses exactly one floor; latent 4's meets them all;
    latent 5's best F1 misses the support floor, so its other rule is the label. 1000 held-out tokens."""
    #          (support, hits) of candidates 0 and 1, held-out firings
    latents = [
        ([(9, 9)], 10),  # support 9 < 10
        ([(10, 4)], 8),  # 4 firings < 5 (precision 0.5)
        ([(100, 9)], 20),  # precision 0.45 < 0.5
        ([(600, 19)], 20),  # precision 0.95 < 2 x base rate 0.6
        ([(40, 16)], 20),  # precision 0.8, recall 0.4
        ([(9, 9), (40, 8)], 10),  # F1 0.95 (support 9) and 0.32
    ]
    support = torch.tensor([[s for s, _ in c] + [1] * (2 - len(c)) for c, _ in latents])
    hits = torch.tensor([[h for _, h in c] + [0] * (2 - len(c)) for c, _ in latents])
    fires = torch.tensor([f for _, f in latents])
    valid = torch.tensor([[True] * len(c) + [False] * (2 - len(c)) for c, _ in latents])
    n = len(latents)
    empty = (torch.zeros(n, 0, 3), torch.zeros(n, 0), [], torch.zeros(n, 0), torch.zeros(n))
    scored = Scored(
        *empty, valid, hits / fires[:, None], hits / support, support, hits, hits[:, None], fires, 1000, None, None
    )
    assert choose_labels(scored, torch.zeros(2)).tolist() == [-1, -1, -1, -1, 0, 1]


def test_ngram_keys_name_their_tokens():
    space = KeySpace(10, 3)
    ids, docs, kept = rows((0, [BOS, 3, 5, 4]))
    keys = space.ngram_keys(ids, docs, kept)
    assert [space.kind(k) for k in keys[1].tolist()] == [("token", (5,)), ("2-gram", (3, 5)), ("3-gram", (0, 3, 5))]
    assert space.kind(int(keys[0, 2])) == ("3-gram", (10, 0, 3))  # before the row: "no token" (id = vocab size)
    assert space.at_document_start(keys[:, 1:], BOS).tolist() == [[True, True], [False, True], [False, False]]


def test_large_vocabularies_cap_the_ngram_order():
    assert KeySpace(50_257, 65_536).max_order == 2
    assert KeySpace(200, 16_384).max_order == 3
