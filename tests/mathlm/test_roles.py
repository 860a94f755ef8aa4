"""monosemantic.mathlm.roles: from a packed token's provenance (document id, position) back to its role,
for the built-in tokenizer and for a GPT-2-like one (no BOS of its own, BOS = EOS, tokens that begin
with a space), checked against offsets counted here from the tokens' own text."""

import re
from collections import Counter

import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from monosemantic.data.corpora import CorpusShard, TextFileCorpus, encode, pack, prompt_ids
from monosemantic.mathlm.corpus import MathCorpus, Role
from monosemantic.mathlm.roles import answer_relation, document_roles, prompt_roles, role_of
from monosemantic.mathlm.tokenizer import build_tokenizer

WORDS = re.compile(r" ?[^ ]+| ")  # GPT-2's habit: a word with the space before it


def gpt2_like(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose tokens carry their leading space, with one special token that is
    both BOS and EOS and that it never adds itself (GPT-2's setup)."""
    pieces = sorted({" ", *(p for t in texts for p in WORDS.findall(t))})  # " ": a prompt's last token
    vocab = {"<|endoftext|>": 0, **{p: i + 1 for i, p in enumerate(pieces)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORDS.pattern), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def tokenizers():
    docs = list(MathCorpus("train").documents(limit=400))
    return {"builtin": build_tokenizer(), "gpt2_like": gpt2_like([d.text for d in docs])}


def expected_roles(sample, tok, ids: list[int]) -> list[Role]:
    """The role of each of `ids` (a document as packed): BOS / EOS by id at the ends, else the role of
    the character the token starts at, counting characters from the tokens' own text."""
    out, start = [], 0
    for j, i in enumerate(ids):
        if (j == 0 and i == tok.bos_token_id) or (j == len(ids) - 1 and i == tok.eos_token_id):
            out.append(Role("bos" if j == 0 else "eos"))
            continue
        piece = tok.convert_ids_to_tokens(i)
        assert sample.text[start : start + len(piece)] == piece
        out.append(sample.role_at(start))
        start += len(piece)
    assert start == len(sample.text)
    return out


@pytest.mark.parametrize("name", ["builtin", "gpt2_like"])
def test_role_of_every_packed_token(tokenizers, name):
    tok, corpus = tokenizers[name], MathCorpus("train")
    docs = {d.id: d for d in corpus.documents(limit=300)}
    checked = Counter()
    for batch in pack(docs.values(), tok, seq_len=64, batch_tokens=512):
        for doc, pos, token in zip(
            batch.doc_ids.flatten().tolist(), batch.positions.flatten().tolist(), batch.input_ids.flatten().tolist()
        ):
            if doc < 0:
                continue
            ids = encode(tok, docs[doc].text)
            assert ids[pos] == token
            role = role_of(corpus, doc, pos, tok)
            assert role == expected_roles(docs[doc], tok, ids)[pos]
            checked[role.kind] += 1
    assert checked["bos"] == checked["eos"] == len(docs)
    assert checked["answer_digit" if name == "builtin" else "space"] > 300  # GPT-2-like: ' 895' is a space
    shard = CorpusShard(corpus, 1, 3)  # a data-parallel rank's share reads the same documents
    doc = next(iter(shard.documents()))
    assert document_roles(shard, doc.id, tok) == expected_roles(doc, tok, encode(tok, doc.text))


def test_space_led_tokens_take_the_role_of_their_space(tokenizers):
    tok = tokenizers["gpt2_like"]
    corpus = MathCorpus("train")
    doc = next(d for d in corpus.documents() if d.category == "add_3d")  # 'abc + def = ghi'
    roles = document_roles(corpus, doc.id, tok)
    assert tok.convert_ids_to_tokens(encode(tok, doc.text))[2] == " +"
    assert [r.kind for r in roles] == ["bos", "operand_digit", "space", "space", "space", "space", "eos"]
    assert [r.where for r in roles[2:6]] == ["before_operator", "after_operator", "before_relation", "after_relation"]


@pytest.mark.parametrize("name", ["builtin", "gpt2_like"])
def test_prompt_roles_follow_prompt_ids(tokenizers, name):
    tok = tokenizers[name]
    for s in MathCorpus("train").documents(limit=300):
        roles, ids = prompt_roles(s, tok), prompt_ids(tok, s.prompt)
        assert len(roles) == len(ids) and roles[0] == Role("bos") and "eos" not in {r.kind for r in roles}
        if name == "builtin":  # words and digits: the prompt's tokens are the text's first tokens
            assert roles == document_roles(MathCorpus(), s.id, tok)[: len(roles)]


def test_other_corpora_have_no_roles_and_bad_positions_are_errors(tmp_path, tokenizers):
    tok = tokenizers["builtin"]
    path = tmp_path / "plain.txt"
    path.write_text("3 + 4 = 7\n")
    assert role_of(TextFileCorpus(path), 0, 1, tok) is None and document_roles(TextFileCorpus(path), 0, tok) is None
    n = len(encode(tok, MathCorpus().sample(5).text))
    assert role_of(MathCorpus(), 5, n - 1, tok) == Role("eos")
    with pytest.raises(IndexError, match=f"position {n} is outside document 5 \\({n} tokens\\)"):
        role_of(MathCorpus(), 5, n, tok)


RELATION_BEFORE_ANSWER = re.compile(
    r"(=|≈|equals|is approximately|es igual a|es aproximadamente|égale environ|égale) $"
)
APPROXIMATE = ("≈", "is approximately", "es aproximadamente", "égale environ")


def test_answer_relation_is_the_relation_the_answer_follows():
    kinds = Counter()
    for s in MathCorpus("train").documents(limit=3000):
        found = RELATION_BEFORE_ANSWER.search(s.prompt)
        relation = answer_relation(s)
        if found is None:
            assert relation is None and s.category in ("compare", "problem_en", "problem_es", "problem_fr"), s.text
            continue
        assert relation.exact == (found.group(1) not in APPROXIMATE) == s.exact, s.text
        assert relation.kind == ("relation" if found.group(1) in "=≈" else "relation_word")
        kinds[relation.kind, relation.exact] += 1
    assert min(kinds.values()) > 10 and len(kinds) == 4
