"""The analysis' bounded latents (analysis/shard_latents.py, `SAE.encode_entries`): the nonzeros of
every architecture's dense `encode`, each shard's columns and firings as the dense path took them,
the same store whether the latents are cached across shards or encoded anew, and nearest latents
within blocks (routed experts) for wide dictionaries."""

import hashlib
import shutil
import sqlite3

import pytest
import torch
from safetensors import safe_open

from monosemantic.analysis.analyze import AnalyzeConfig, analyze, nearest_latents, neighbour_block
from monosemantic.analysis.shard_latents import shard_view
from monosemantic.analysis.store import DB_FILE, features_dir
from monosemantic.sae import SAEConfig, create_sae
from monosemantic.sae.config import SAE_ARCHS

ARCHS = sorted(a for a in SAE_ARCHS if a != "transcoder")


def make(arch, d_in=12, d_sae=48, k=5):
    torch.manual_seed(0)
    kw = {"experts": 4} if arch == "routed" else {}
    sae = create_sae(SAEConfig(arch=arch, d_in=d_in, d_sae=d_sae, k=k, dtype="float32", **kw))
    with torch.no_grad():  # biases that make some latents fire and others not
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.5)
        if arch == "routed":
            sae.W_router.normal_(0, 1.0)
    return sae


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("budget", [1, 1 << 26])  # one token at a time; all at once
def test_entries_are_the_nonzeros_of_the_dense_encode(arch, budget):
    """Bit for bit: the tokens the budget lets through at once are encoded together (a matmul's
    rounding can depend on its number of rows), so one token at a time is compared with that."""
    sae = make(arch).eval()
    x = torch.randn(3, 7, sae.d_in) * 2
    with torch.inference_mode():
        flat = x.reshape(-1, sae.d_in)
        dense_one_at_a_time = budget == 1 and arch != "routed"  # routed never encodes dense here
        z = torch.cat([sae.encode(t[None]) for t in flat]) if dense_one_at_a_time else sae.encode(flat)
        tok, lat, val = sae.encode_entries(x, budget)
    want = torch.nonzero(z, as_tuple=True)
    assert z.count_nonzero() > 0
    assert torch.equal(tok, want[0]) and torch.equal(lat, want[1]) and torch.equal(val, z[want])


@pytest.mark.parametrize("lo,hi", [(0, 48), (12, 36), (40, 48)])
def test_a_shard_view_is_the_dense_columns_and_firings(lo, hi):
    sae = make("routed").eval()
    with torch.inference_mode():
        x = torch.randn(20, sae.d_in)
        z = sae.encode(x)
        shard, firing = shard_view(sae.encode_entries(x), 20, lo, hi)
    assert torch.equal(shard, z[:, lo:hi]) and torch.equal(firing, (z > 0).nonzero())


def test_wide_dictionaries_search_neighbours_within_blocks():
    W = torch.randn(100, 8)
    everywhere = nearest_latents(W, 10, 70, n=5)
    assert everywhere == nearest_latents(W, 10, 70, n=5, chunk=7)
    within = nearest_latents(W, 10, 70, n=5, block=25)
    for i, (ids, sims) in zip(range(10, 70), within):
        first = i // 25 * 25
        unit = W[first : first + 25] / W[first : first + 25].norm(dim=1, keepdim=True)
        ref = (unit[i - first] @ unit.T).index_fill(0, torch.tensor([i - first]), -torch.inf).topk(5)
        assert ids == (ref.indices + first).tolist() and sims == pytest.approx(ref.values.tolist(), abs=1e-6)
    routed = make("routed", d_sae=1 << 17, k=4, d_in=4)
    assert neighbour_block(make("topk")) is None and neighbour_block(routed) == (1 << 17) // 4


def file_digest(path) -> object:
    """A safetensors file's metadata and tensors' bytes (its header orders metadata keys at random);
    any other file's bytes."""
    if path.suffix != ".safetensors":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    with safe_open(path, "pt") as f:
        tensors = {k: hashlib.sha256(f.get_tensor(k).numpy().tobytes()).hexdigest() for k in sorted(f.keys())}
        return f.metadata(), tensors


def store_digest(run) -> dict:
    directory = features_dir(run)
    files = {
        str(p.relative_to(directory)): file_digest(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "manifest.json" and not p.name.startswith(DB_FILE)
    }
    with sqlite3.connect(directory / DB_FILE) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        rows = {t: sorted(map(repr, db.execute(f"SELECT * FROM {t}"))) for t in tables}
    return {"files": files, "rows": rows}


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_cached_and_re_encoded_latents_give_the_same_store(tiny_model_dirs, tmp_path, monkeypatch):
    """A routed run analysed in 4 shards: latents encoded once and cached, or anew in every shard
    (a cache too small for them), give identical shard files and tables."""
    from tiny_models import tiny_train_argv

    from monosemantic.analysis import shard_latents
    from monosemantic.cli.main import main

    run = tmp_path / "run"
    argv = tiny_train_argv(tiny_model_dirs["gpt2"], run, "--arch", "routed", "--experts", "4", tokens="8k")
    assert main(argv) == 0
    cfg = AnalyzeConfig(tokens=3000, shard_latents=64, batch_tokens=1024, top_k=6, window=8)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    analyze(run, cfg, progress=False)
    monkeypatch.setattr(shard_latents, "CACHE_BYTES", 0)
    analyze(copy, cfg, progress=False)
    assert store_digest(run) == store_digest(copy)
