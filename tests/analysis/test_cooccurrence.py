"""Co-occurring features as the analysis stores them, against a brute-force count: every token's set
of firing latents, recomputed over the same tokens, and every pair counted in Python."""

import json
import shutil
from collections import Counter

import pytest
import torch

from monosemantic.analysis.cooccurrence import COOCCURRENCE_DIR, PARTNERS, Cooccurrence, cooccurring
from monosemantic.cli.main import main
from monosemantic.data.corpora import kept_tokens, pack
from monosemantic.runmodel import RunModel

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]
ANALYZE = ["-q", "--threads", "1", "analyze"]
ARGS = ["--tokens", "6000", "--batch-tokens", "1024", "--top-k", "6", "--window", "8"]  # as conftest's analysed_run


@torch.inference_mode()
def brute_force(run_dir, tokens: int, batch_tokens: int) -> tuple[Counter, Counter, int]:
    """(pair counts {(i, j)}, fires {i}, tokens read) over the tokens the analysis reads, token by token."""
    run = RunModel.of_run(run_dir)
    pairs, fires, n = Counter(), Counter(), 0
    for batch in pack(run.corpus.documents(), run.tokenizer, run.seq_len, batch_tokens):
        z = run.latents(batch.input_ids, batch.attention_mask, kept_tokens(batch, run.tokenizer))
        for row in z.tolist():
            active = [i for i, v in enumerate(row) if v > 0]
            fires.update(active)
            pairs.update((i, j) for i in active for j in active if i != j)
        n += z.shape[0]
        if n >= tokens:
            return pairs, fires, n
    raise AssertionError("corpus ran out")


def test_partners_match_a_brute_force_count(analysed_run):
    features = analysed_run / "features"
    manifest = json.loads((features / "manifest.json").read_text())
    settings = manifest["settings"]["analysis"]
    pairs, fires, n = brute_force(analysed_run, settings["tokens"], settings["batch_tokens"])
    n_latents, checked = manifest["n_latents"], 0
    for i in range(n_latents):
        got = cooccurring(features, i, manifest["shard_latents"], n_latents)
        assert got["tokens"] == n
        mine = sorted(((c, j) for (a, j), c in pairs.items() if a == i), key=lambda cj: (-cj[0], cj[1]))
        want = [
            {
                "feature": j,
                "count": c,
                "p": pytest.approx(c / fires[i], rel=1e-6),
                "jaccard": pytest.approx(c / (fires[i] + fires[j] - c), rel=1e-6),
            }
            for c, j in mine[:PARTNERS]
        ]
        assert got["partners"] == want
        checked += bool(want)
    assert checked > n_latents // 4  # the tiny run's features do co-occur


def test_an_older_store_gets_them_from_analyze_again(analysed_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(analysed_run, run)
    shutil.rmtree(run / "features" / COOCCURRENCE_DIR)
    manifest = json.loads((run / "features" / "manifest.json").read_text())
    assert cooccurring(run / "features", 5, manifest["shard_latents"], manifest["n_latents"]) is None
    assert main([*ANALYZE, str(run), *ARGS]) == 0
    for i in range(manifest["n_latents"]):
        again = cooccurring(run / "features", i, manifest["shard_latents"], manifest["n_latents"])
        assert again == cooccurring(analysed_run / "features", i, manifest["shard_latents"], manifest["n_latents"])


@pytest.mark.parametrize("lo, hi", [(0, 7), (7, 20)])
def test_a_shard_counts_partners_outside_it_as_the_dense_product(lo, hi):
    generator = torch.Generator().manual_seed(lo)
    batches = [torch.rand(n, 20, generator=generator) > 0.6 for n in (30, 1, 17)]
    co = Cooccurrence(lo, hi, 20)
    for active in batches:
        co.update(active.nonzero(), active.shape[0])
    A = torch.cat(batches).long()
    counts = (A.T @ A)[lo:hi]
    counts[torch.arange(hi - lo), torch.arange(lo, hi)] = 0  # a latent is not its own partner
    got = co.partners(4)
    for r in range(hi - lo):
        order = sorted(range(20), key=lambda j: (-int(counts[r, j]), j))[:4]
        want = [j for j in order if counts[r, j] > 0]
        assert got["partner"][r].tolist() == want + [-1] * (4 - len(want))
        assert got["count"][r, : len(want)].tolist() == [int(counts[r, j]) for j in want]
    assert co.tokens == 48 and torch.equal(co.fires, A.sum(0))
