"""The packed-token cache of the built-in corpus: what it gives back is exactly what `pack` makes."""

import os
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import pytest
import torch

from monosemantic.data.corpora import CorpusShard, encode_many, pack
from monosemantic.data.pack_cache import SEGMENT_BATCHES, cache_folder, decode_segment, packed_batches
from monosemantic.data.stream import ActivationStream, HarvestConfig
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.models import load_model

ROOT = Path(__file__).resolve().parents[2]
SEQ, TOKENS = 64, 1024  # small batches: a segment is 32 x 1024 tokens, ~2600 documents
N = 2 * SEGMENT_BATCHES + 9  # two whole segments and part of a third


@pytest.fixture(scope="module")
def tok():
    return load_model("builtin")[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MONOSEMANTIC_PACK_CACHE", str(tmp_path / "packed"))
    return tmp_path / "packed"


def reference(corpus, tok, n=N, seq=SEQ):
    return list(islice(pack(corpus.documents(), tok, seq, TOKENS), n))


def assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        for x, y in zip(a, b):
            assert x.dtype == y.dtype == torch.long and x.shape == y.shape and torch.equal(x, y)


def segments(folder):
    return sorted(p for p in folder.iterdir() if p.suffix == ".bin")


def test_cold_and_warm_reads_are_the_packed_batches(cache, tok):
    corpus = MathCorpus("train")
    want = reference(corpus, tok)
    assert_same(list(islice(packed_batches(corpus, tok, SEQ, TOKENS), N)), want)  # cold: generates, writes
    folder = cache_folder(corpus, tok, SEQ, TOKENS)
    assert len(segments(folder)) == 3
    assert_same(list(islice(packed_batches(corpus, tok, SEQ, TOKENS), N)), want)  # warm: read back


def test_a_stream_resumed_from_the_cache_gives_the_uncached_chunks(cache, tok, monkeypatch):
    model = load_model("builtin")[0]
    cfg = HarvestConfig(seq_len=SEQ, batch_tokens=TOKENS, chunk_tokens=4096)

    def chunks(start):
        stream = ActivationStream(model, tok, "layers.0.resid.pre", MathCorpus("train", seed=3), 512, cfg)
        return list(islice(stream.chunks(start), 2))

    for warm in (False, True):  # the cache filled by the first pass, read by the second
        for start in (0, 3):
            got = chunks(start)
            monkeypatch.setenv("MONOSEMANTIC_PACK_CACHE", "off")
            want = chunks(start)
            monkeypatch.setenv("MONOSEMANTIC_PACK_CACHE", str(cache))
            for (acts, prov), (acts_ref, prov_ref) in zip(got, want, strict=True):
                assert torch.equal(prov, prov_ref) and torch.equal(acts, acts_ref), (warm, start)
    assert len(list(cache.iterdir())) == 1


def test_what_the_batches_depend_on_is_in_the_key(cache, tok):
    base = cache_folder(MathCorpus("train"), tok, SEQ, TOKENS)
    others = {
        cache_folder(MathCorpus("train", seed=1), tok, SEQ, TOKENS),
        cache_folder(MathCorpus("heldout"), tok, SEQ, TOKENS),
        cache_folder(MathCorpus("train", mixture={"add_3d": 60}), tok, SEQ, TOKENS),
        cache_folder(CorpusShard(MathCorpus("train"), 1, 2), tok, SEQ, TOKENS),
        cache_folder(MathCorpus("train"), tok, 32, TOKENS),
        cache_folder(MathCorpus("train"), tok, SEQ, 2048),
    }
    assert base not in others and len(others) == 6
    list(islice(packed_batches(MathCorpus("train"), tok, SEQ, TOKENS), SEGMENT_BATCHES))
    corpus = MathCorpus("train", seed=1)  # another key: generated for itself, not read from seed 0's
    assert_same(list(islice(packed_batches(corpus, tok, SEQ, TOKENS), 40)), reference(corpus, tok, 40))
    assert len(list(cache.iterdir())) == 2


def test_a_tokenizer_change_is_a_new_key(cache, tok):
    other = load_model("builtin")[1]
    other.backend_tokenizer.add_tokens(["quarante-deux"])
    assert cache_folder(MathCorpus("train"), tok, SEQ, TOKENS) != cache_folder(MathCorpus("train"), other, SEQ, TOKENS)


def test_damaged_or_truncated_segments_are_regenerated(cache, tok):
    corpus = MathCorpus("train")
    want = reference(corpus, tok)
    list(islice(packed_batches(corpus, tok, SEQ, TOKENS), N))
    first, second, _ = segments(cache_folder(corpus, tok, SEQ, TOKENS))
    good = second.read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 1
    second.write_bytes(bytes(flipped))
    first.write_bytes(first.read_bytes()[:-100])
    assert decode_segment(first.read_bytes()) is None and decode_segment(second.read_bytes()) is None
    assert_same(list(islice(packed_batches(corpus, tok, SEQ, TOKENS), N)), want)
    assert decode_segment(first.read_bytes()) is not None and second.read_bytes() == good  # both rewritten


def test_encode_many_gives_the_tokenizers_own_ids(tok):
    texts = [doc.text for doc in islice(MathCorpus("train").documents(), 3000)] + ["", "ünïcode ≈ 3.14 ✓"]
    own = tok(texts, add_special_tokens=True)["input_ids"]  # the wrapper's call, as encode_many made it before
    assert encode_many(tok, texts) == [[*ids, tok.eos_token_id] for ids in own]
    truncating = load_model("builtin")[1]
    truncating.backend_tokenizer.enable_truncation(4)  # the wrapper turns this off: so must encode_many
    assert encode_many(truncating, texts[:50]) == [[*ids, tok.eos_token_id] for ids in own[:50]]


def test_the_cache_can_be_turned_off(monkeypatch, tok):
    monkeypatch.setenv("MONOSEMANTIC_PACK_CACHE", "off")
    assert cache_folder(MathCorpus("train"), tok, SEQ, TOKENS) is None


def test_without_a_key_the_batches_are_generated_not_cached(cache, tok, monkeypatch):
    """No source to hash (as in a .pyc-only install: inspect.getsource raises OSError): no cache,
    the batches generated as without one."""

    def no_source(_module):
        raise OSError("could not get source code")

    monkeypatch.setattr("monosemantic.data.pack_cache.inspect.getsource", no_source)
    corpus = MathCorpus("train")
    assert cache_folder(corpus, tok, SEQ, TOKENS) is None
    assert_same(list(islice(packed_batches(corpus, tok, SEQ, TOKENS), 3)), reference(corpus, tok, 3))
    assert not cache.exists()


FILL = """
import sys
from itertools import islice
from monosemantic.data.pack_cache import packed_batches
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.models import load_model
for _ in islice(packed_batches(MathCorpus("train"), load_model("builtin")[1], 64, 1024), 10**6):
    pass
"""


@pytest.mark.process
def test_a_writer_killed_mid_fill_leaves_only_whole_segments(cache, tok):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MONOSEMANTIC_PACK_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-c", FILL], env=env)
    folder = cache_folder(MathCorpus("train"), tok, SEQ, TOKENS)
    deadline = time.monotonic() + 240
    while not (folder.is_dir() and len(segments(folder)) >= 2) and time.monotonic() < deadline:
        assert proc.poll() is None, "the filling process ended"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    files = segments(folder)
    assert len(files) >= 2
    assert all(decode_segment(f.read_bytes()) is not None for f in files)  # only whole segments got a name
    n = (len(files) + 1) * SEGMENT_BATCHES  # past what the killed writer left: reads, then generates
    assert_same(
        list(islice(packed_batches(MathCorpus("train"), tok, SEQ, TOKENS), n)), reference(MathCorpus("train"), tok, n)
    )
