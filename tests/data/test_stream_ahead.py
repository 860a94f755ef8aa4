"""The harvest's fast paths give what the plain ones gave: documents tokenized many per call are
tokenized as one at a time, and a stream that harvests its next chunk in a thread (`look_ahead`,
as `train` runs it) yields the very batches and provenance of one that does not, through rewinds,
jumps and `stop_ahead`."""

import pytest
import torch

from monosemantic.data.corpora import ENCODE_CHARS, TextFileCorpus, encode, encode_many
from monosemantic.data.stream import ActivationStream, HarvestConfig
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.mathlm.tokenizer import build_tokenizer
from monosemantic.models import load_model

pytestmark = pytest.mark.integration  # harvests from a model: see tests/conftest.py

HOOK = "layers.1.mlp.neurons"
CFG = HarvestConfig(seq_len=64, batch_tokens=512, chunk_tokens=600, seed=3)


@pytest.fixture(scope="module")
def gpt2(tiny_model_dirs):
    return load_model(tiny_model_dirs["gpt2"])


def test_documents_tokenized_together_match_one_at_a_time():
    tok = build_tokenizer()
    texts = [doc.text for doc in MathCorpus("train").documents(limit=300)]
    texts += ["", "   ", "1 + 1 = 2 " * (ENCODE_CHARS // 10 + 5), "7 × 8 = 56"]  # empty, blank, long (in pieces)
    assert encode_many(tok, texts) == [encode(tok, t) for t in texts]


def batches(s: ActivationStream, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for _ in range(n):
        x = next(s)
        assert s.provenance is not None
        out.append((x, s.provenance))
    return out


def assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (x, p), (y, q) in zip(a, b):
        assert torch.equal(x, y) and torch.equal(p, q)


def test_a_stream_harvesting_ahead_yields_the_same_batches(gpt2):
    model, tok = gpt2
    plain = ActivationStream(model, tok, HOOK, MathCorpus("train"), 100, CFG)
    reference = batches(plain, 20)  # chunks of 6 batches: 0 .. 3
    ahead = ActivationStream(model, tok, HOOK, MathCorpus("train"), 100, CFG, look_ahead=True)
    try:
        assert_same(batches(ahead, 8), reference[:8])
        assert ahead._ahead is not None  # chunk 2 is being harvested meanwhile
        ahead.load_state_dict({"chunk": 1, "index": 1})  # back into the chunk read last
        assert_same(batches(ahead, 9), reference[7:16])
        ahead.load_state_dict({"chunk": 0, "index": 5})  # back before it: harvested again
        assert_same(batches(ahead, 2), reference[5:7])
        ahead.load_state_dict({"chunk": 3, "index": 0})  # past the chunk harvested ahead
        assert_same(batches(ahead, 2), reference[18:20])
        ahead.stop_ahead()
        assert ahead._ahead is None
        ahead.load_state_dict({"chunk": 2, "index": 0})  # still usable after stop_ahead
        assert_same(batches(ahead, 6), reference[12:18])
    finally:
        ahead.stop_ahead()
    chunks = ActivationStream(model, tok, HOOK, MathCorpus("train"), 100, CFG, look_ahead=True)
    got = []
    for acts, prov in chunks.chunks(start=1):  # as build_cache reads it
        got.append((acts, prov))
        if len(got) == 2:
            break
    chunks.stop_ahead()
    assert_same(
        [(a.view(-1), p.view(-1)) for a, p in got],
        [
            (
                torch.cat([x for x, _ in reference[6 * c : 6 * c + 6]]).view(-1),
                torch.cat([p for _, p in reference[6 * c : 6 * c + 6]]).view(-1),
            )
            for c in (1, 2)
        ],
    )


def test_a_finite_corpus_ends_at_the_same_batch_when_harvested_ahead(gpt2, tmp_path):
    model, tok = gpt2
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"{i} + {i} = {2 * i}\n" for i in range(400)))
    plain = list(ActivationStream(model, tok, HOOK, TextFileCorpus(path), 100, CFG))
    ahead = ActivationStream(model, tok, HOOK, TextFileCorpus(path), 100, CFG, look_ahead=True)
    assert len(plain) > 12  # several chunks, the last one shorter
    got = list(ahead)
    assert len(got) == len(plain) and all(torch.equal(x, y) for x, y in zip(got, plain))
    with pytest.raises(StopIteration):  # and stays ended
        next(ahead)
