"""Token roles of a `.jsonl` corpus (field "roles"): the format checked with clear errors, spans
mapped onto tokens by hand."""

import json

import pytest

from monosemantic.data.corpora import CorpusError, TextFileCorpus
from monosemantic.data.roles import span_token_roles
from monosemantic.mathlm.tokenizer import build_tokenizer

EQ = {"kind": "relation", "exact": "exact"}


def corpus(tmp_path, *records) -> TextFileCorpus:
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return TextFileCorpus(path)


def test_roles_are_read_and_put_on_tokens(tmp_path):
    spans = [
        {"start": 6, "end": 7, "role": EQ},
        {"start": 0, "end": 1, "role": {"kind": "operand_digit", "place": "units"}},
        {"start": 8, "end": 10, "role": {"kind": "answer_digit", "answer_start": True, "operand": 0}},
    ]
    [doc, plain] = corpus(tmp_path, {"text": "3 + 4 = 12", "roles": spans}, {"text": "no roles"}).documents()
    assert [(s.start, s.end) for s in doc.roles] == [(0, 1), (6, 7), (8, 10)] and plain.roles == ()
    tok = build_tokenizer()
    roles = span_token_roles(doc.text, doc.roles, tok)
    # <bos> 3 ␣ + ␣ 4 ␣ = ␣ 1 2 <eos>: the role of the span each token starts in, none outside spans
    assert [tok.convert_ids_to_tokens(i) for i in tok(doc.text)["input_ids"]] == [
        "<bos>", "3", " ", "+", " ", "4", " ", "=", " ", "1", "2"
    ]  # fmt: skip
    assert [None if r is None else dict(r) for r in roles] == [
        None,
        {"kind": "operand_digit", "place": "units"},
        *[None] * 5,
        EQ,
        None,
        {"kind": "answer_digit", "answer_start": True, "operand": 0},
        {"kind": "answer_digit", "answer_start": True, "operand": 0},
        None,  # <eos>
    ]
    assert roles[1][0] == ("kind", "operand_digit")  # kind first, the rest sorted


@pytest.mark.parametrize(
    "roles, message",
    [
        ({"start": 0}, "'roles' must be a list of spans, got dict"),
        ([{"start": 0, "end": 1}], 'roles[0]: expected {"start": int, "end": int, "role"'),
        ([{"start": 2, "end": 2, "role": EQ}], "roles[0]: start 2 and end 2 must be integers with 0 <= start"),
        ([{"start": 0, "end": 9, "role": EQ}], "0 <= start < end <= 5 (the text's length in characters)"),
        ([{"start": 0, "end": 1, "role": {"exact": True}}], "roles[0]: 'role' must be an object with a non-empty"),
        ([{"start": 0, "end": 1, "role": {"kind": "x", "value": 1.5}}], "role attribute 'value' must be a string"),
        ([{"start": 0, "end": 3, "role": EQ}, {"start": 2, "end": 4, "role": EQ}], "spans [0, 3) and [2, 4) overlap"),
    ],
)
def test_bad_roles_are_refused_naming_the_line_and_the_span(tmp_path, roles, message):
    c = corpus(tmp_path, {"text": "fine"}, {"text": "a = b", "roles": roles})
    with pytest.raises(CorpusError) as e:
        list(c.documents())
    assert str(e.value).startswith(f"{c.path}:2: ") and message in str(e.value)
