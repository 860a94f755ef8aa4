"""The math corpus' token roles read as concepts (codes in words, word forms as their symbols' kinds,
the answer's first token marked), concepts and their words."""

from monosemantic.analysis.concepts import (
    concept_phrase,
    concepts_of,
    document_roles,
    documents_roles,
    math_spans,
    next_concepts_of,
    token_class,
)
from monosemantic.data.corpora import Document
from monosemantic.data.roles import RoleSpan, span_token_roles
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.mathlm.tokenizer import build_tokenizer


def test_math_roles_read_as_concepts():
    tok = build_tokenizer()
    sample = MathCorpus().sample(31)
    assert sample.text == "6 por 8 es igual a 48"
    roles = [None if r is None else dict(r) for r in document_roles(sample, tok)]
    tokens = ["<bos>", *tok.tokenize(sample.text), "<eos>"]
    assert len(roles) == len(tokens) and roles[0] is None and roles[-1] is None
    spanish = {"language": "Spanish", "operation": "multiplication", "form": "word"}
    assert (tokens[3], roles[3]) == ("por", {"kind": "operator", **spanish})
    assert (tokens[7], roles[7]) == ("es", {"kind": "relation", "exact": "exact", **spanish})
    answer = {"kind": "answer_digit", "operation": "multiplication", "operand": "answer", "exact": "exact"}
    assert (tokens[13], roles[13]) == ("4", {**answer, "place": "tens", "answer_start": True})
    assert (tokens[14], roles[14]) == ("8", {**answer, "place": "units"})
    assert roles[1] == {
        "kind": "operand_digit",
        "operation": "multiplication",
        "operand": "first operand",
        "place": "units",
    }
    approx = MathCorpus().sample(4)
    assert approx.text == "25 / 9 ≈ 2.78"
    roles = [None if r is None else dict(r) for r in document_roles(approx, tok)]
    assert roles[4] == {"kind": "operator", "operation": "division", "form": "ascii"}
    assert roles[8] == {"kind": "relation", "operation": "division", "exact": "approximate", "form": "symbol"}


def test_concepts_and_their_words():
    tok = build_tokenizer()
    first_answer_digit = document_roles(MathCorpus().sample(31), tok)[13]
    concepts = concepts_of(first_answer_digit)
    assert concepts[0] == ("role:kind", "answer_digit")
    assert [concept_phrase(*c) for c in concepts] == [
        "answer digit",
        "answer digit, first token of the answer",
        "answer digit, exact",
        "answer digit, answer",
        "answer digit, multiplication",
        "answer digit, tens",
    ]
    assert next_concepts_of(first_answer_digit) == [
        ("next:kind", "answer_digit"),
        ("next:answer_start", ("answer_digit", True)),
    ]
    assert concept_phrase("role:count", ("item", 3)) == "item, count 3"
    assert concept_phrase("role:plural", ("item", False)) == "item, not plural"
    assert [token_class(t) for t in ("7", " 12", " ", "\n", "fois", " the", "=", "", "(3")] == [
        "digit", "digit", "space", "space", "word", "word", "symbol", None, "symbol"
    ]  # fmt: skip


def test_documents_roles_of_a_batch_are_those_of_each_document_alone():
    """The analysis reads a batch's documents with one tokenizer call: the same roles, document by
    document, as `data.roles.span_token_roles` gives each alone (math samples, a document with
    `.jsonl`-style roles, one without roles, an empty one)."""
    tok = build_tokenizer()
    samples = [MathCorpus().sample(i) for i in range(40)]
    spans = (RoleSpan(0, 2, (("kind", "number"),)), RoleSpan(3, 4, (("kind", "relation"), ("exact", True))))
    docs = [*samples, Document(1000, "12 = 12", roles=spans), Document(1001, "no roles here"), Document(1002, "")]
    want = [span_token_roles(s.text, math_spans(s), tok) for s in samples]
    want += [span_token_roles("12 = 12", spans, tok), None, None]
    assert documents_roles(docs, tok) == want
    assert [document_roles(d, tok) for d in docs] == want
