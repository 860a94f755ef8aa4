"""Corpora, packing, activation harvesting and the disk cache: provenance maps every vector back to
its token, BOS and padding are never harvested, streams resume exactly, and the cache round-trips
and refuses a damaged shard."""

import json

import pytest
import torch

from monosemantic.data.cache import CachedActivations, CacheError, build_cache
from monosemantic.data.corpora import CorpusError, Document, TextFileCorpus, encode, open_corpus, pack
from monosemantic.data.stream import ActivationStream, HarvestConfig
from monosemantic.hooks import capture
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.mathlm.tokenizer import build_tokenizer
from monosemantic.models import ModelError, load_model

pytestmark = pytest.mark.integration  # trains or analyses whole runs: see tests/conftest.py

HOOK = "layers.1.mlp.neurons"
CFG = HarvestConfig(seq_len=64, batch_tokens=512, chunk_tokens=600, seed=3)


@pytest.fixture(scope="module")
def gpt2(tiny_model_dirs):
    return load_model(tiny_model_dirs["gpt2"])


def stream(gpt2, batch_size=100, corpus=None, cfg=CFG):
    model, tok = gpt2
    return ActivationStream(model, tok, HOOK, corpus or MathCorpus("train"), batch_size, cfg)


# ---- corpora and packing ------------------------------------------------------------------------


def test_packing_puts_one_document_per_row_and_labels_every_token():
    tok = build_tokenizer()
    texts = ["1 + 1 = 2", "x" * 150, "sin(0) = 0", "7 vs 9: <", "12 + 30 = 42", "a"]
    docs = [Document(i, t) for i, t in enumerate(texts)]
    batches = list(pack(docs, tok, seq_len=64, batch_tokens=128, pool_rows=4))
    rows = [(b, r) for b in batches for r in range(b.input_ids.shape[0])]
    assert len(rows) == 8  # doc 1 (152 tokens with BOS/EOS) becomes 3 rows of <= 64
    for b in batches:
        assert b.input_ids.numel() <= 128 and b.input_ids.shape[1] <= 64
    seen = {}
    for b, r in rows:
        doc_ids = set(b.doc_ids[r].tolist()) - {-1}
        assert len(doc_ids) == 1  # one document (piece) per row...
        (d,) = doc_ids
        real = b.doc_ids[r] >= 0
        assert bool(real[: int(real.sum())].all())  # ...from column 0, padding only at the end
        pos = b.positions[r][real]
        assert torch.equal(pos, torch.arange(int(pos[0]), int(pos[0]) + len(pos)))
        encoded = encode(tok, texts[d])
        assert b.input_ids[r][real].tolist() == encoded[int(pos[0]) : int(pos[0]) + len(pos)]
        seen.setdefault(d, []).extend(pos.tolist())
        assert bool((b.input_ids[r][~real] == tok.pad_token_id).all())
    assert {d: sorted(p) for d, p in seen.items()} == {d: list(range(len(encode(tok, t)))) for d, t in enumerate(texts)}
    again = list(pack(docs, tok, seq_len=64, batch_tokens=128, pool_rows=4))
    assert all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(batches, again))  # deterministic


def test_text_file_corpora(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "hello"}) + "\n" + json.dumps({"text": "world"}) + "\n")
    assert [d.text for d in open_corpus(str(tmp_path / "a.txt")).documents()] == ["first line", "second line"]
    assert [(d.id, d.text) for d in open_corpus(str(tmp_path / "b.jsonl")).documents(start=1)] == [(1, "world")]
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:1: expected a JSON object with a 'text' string"):
        list(TextFileCorpus(tmp_path / "bad.jsonl").documents())
    (tmp_path / "a.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match="expected a .txt or .jsonl file"):
        open_corpus(str(tmp_path / "a.csv"))


def test_saved_hugging_face_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["3 + 4 = 7", "8 − 2 = 6"], "n": [1, 2]}).save_to_disk(str(tmp_path / "ds"))
    corpus = open_corpus(str(tmp_path / "ds"))
    assert [d.text for d in corpus.documents()] == ["3 + 4 = 7", "8 − 2 = 6"]
    with pytest.raises(CorpusError, match=r"no column 'body'"):
        open_corpus(str(tmp_path / "ds"), text_field="body")


# ---- harvesting -------------------------------------------------------------------------------


def test_provenance_maps_every_vector_back_to_its_token_and_activation(gpt2):
    model, tok = gpt2
    s = stream(gpt2)
    got = [(next(s), s.provenance) for _ in range(12)]  # two chunks of 600
    docs = {d.id: d for d in MathCorpus("train").documents(limit=4096)}  # two full pools of 2048 rows
    packed = list(pack(docs.values(), tok, 64, 512))
    where = {}
    for b, batch in enumerate(packed):
        for r, c in (batch.doc_ids >= 0).nonzero().tolist():
            where[(int(batch.doc_ids[r, c]), int(batch.positions[r, c]))] = (b, r, c)
    cache = {}
    for acts, prov in got:
        assert acts.shape == (100, 128) and prov.shape == (100, 3)
        for vec, (doc, position, token) in zip(acts, prov.tolist()):
            assert encode(tok, docs[doc].text)[position] == token  # the right token of the right text
            assert position > 0 and token != tok.bos_token_id  # BOS is never harvested
            b, r, c = where[(doc, position)]
            if b not in cache:
                with capture(model, HOOK) as a:
                    model(input_ids=packed[b].input_ids, attention_mask=packed[b].attention_mask)
                cache[b] = a[HOOK]
            assert torch.equal(vec, cache[b][r, c])  # and its activation, recomputed
    seen = torch.cat([p for _, p in got])[:, :2]
    assert len({tuple(x) for x in seen.tolist()}) == 1200  # no token twice


def test_stream_resumes_exactly_from_its_state(gpt2):
    s = stream(gpt2)
    reference = [next(s) for _ in range(14)]
    for chunk, index in [(0, 0), (0, 4), (1, 2), (2, 1)]:
        r = stream(gpt2)
        r.load_state_dict({"chunk": chunk, "index": index})
        assert torch.equal(next(r), reference[chunk * 6 + index])


def test_chunks_differ_in_order_from_corpus_order(gpt2):
    s = stream(gpt2)
    next(s)
    docs = s.provenance[:, 0]
    assert not bool((docs[1:] >= docs[:-1]).all())  # shuffled within the chunk


def test_a_glob_matching_several_hookpoints_is_refused(gpt2):
    model, tok = gpt2
    with pytest.raises(ModelError, match="matches 2 hookpoints; an SAE reads exactly one"):
        ActivationStream(model, tok, "layers.*.mlp.neurons", MathCorpus("train"), 10, CFG)


# ---- the disk cache -----------------------------------------------------------------------------


def test_cache_round_trips_the_stream_and_resumes_a_partial_build(gpt2, tmp_path):
    reference = stream(gpt2)
    expected = [(next(reference), reference.provenance) for _ in range(12)]
    build_cache(stream(gpt2), tmp_path / "c", 600, progress=False)  # one shard, as if interrupted
    build_cache(stream(gpt2), tmp_path / "c", 1200, progress=False)  # continues with shard 1
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert [s["tokens"] for s in manifest["shards"]] == [600, 600] and manifest["d"] == 128
    cached = CachedActivations(tmp_path / "c", 100)
    for acts, prov in expected:
        assert torch.equal(next(cached), acts) and torch.equal(cached.provenance, prov)
    later = CachedActivations(tmp_path / "c", 100)
    later.load_state_dict({"epoch": 1, "shard": 0, "index": 0})
    epoch1 = [(next(later), later.provenance) for _ in range(12)]
    assert not torch.equal(torch.cat([a for a, _ in epoch1]), torch.cat([a for a, _ in expected]))  # reshuffled...
    assert sorted_rows(epoch1) == sorted_rows(expected)  # ...the same vectors, each with its token


def sorted_rows(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple]:
    """Every (provenance, vector) row of the batches, sorted: equal for the same rows in any order."""
    rows = [(tuple(p), tuple(a)) for acts, prov in batches for a, p in zip(acts.tolist(), prov.tolist())]
    assert len(rows) == len(set(rows))  # each token once per epoch
    return sorted(rows)


def test_a_damaged_shard_is_refused(gpt2, tmp_path):
    build_cache(stream(gpt2), tmp_path / "c", 600, progress=False)
    shard = tmp_path / "c" / "shard_00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0x40
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=r"shard_00000.safetensors: contents do not match the sha256"):
        next(CachedActivations(tmp_path / "c", 100))


def test_a_cache_of_another_source_is_not_mixed_in(gpt2, tmp_path):
    build_cache(stream(gpt2), tmp_path / "c", 600, progress=False)
    model, tok = gpt2
    other = ActivationStream(model, tok, "layers.0.mlp.neurons", MathCorpus("train"), 100, CFG)
    with pytest.raises(CacheError, match="holds activations of another source"):
        build_cache(other, tmp_path / "c", 1200, progress=False)
