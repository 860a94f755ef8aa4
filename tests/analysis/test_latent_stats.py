"""Streaming latent statistics against brute force over every firing kept in memory."""

import math

import pytest
import torch

from monosemantic.analysis.latent_stats import (
    HIST_EDGES,
    N_HIST,
    N_RANGES,
    RANGE_EDGES,
    Batch,
    KeyedSums,
    LatentStats,
    top_per_group,
)

VOCAB = 11


def random_batches(n_batches=6, rows=5, width=12, n_latents=7, seed=0):
    """Packed-like batches: each row a document piece starting at position 0 (BOS at 0), then padding."""
    g = torch.Generator().manual_seed(seed)
    doc = 0
    for _ in range(n_batches):
        lengths = torch.randint(3, width + 1, (rows,), generator=g)
        doc_ids = torch.full((rows, width), -1)
        positions = torch.full((rows, width), -1)
        input_ids = torch.zeros(rows, width, dtype=torch.long)
        for r, n in enumerate(lengths.tolist()):
            doc_ids[r, :n] = doc
            positions[r, :n] = torch.arange(n)
            input_ids[r, :n] = torch.randint(1, VOCAB, (n,), generator=g)
            input_ids[r, 0] = 0  # BOS
            doc += 1
        kept = (doc_ids >= 0) & (positions > 0)
        n_kept = int(kept.sum())
        # activations over several decades, about a third of them zero
        z = torch.exp(torch.randn(n_kept, n_latents, generator=g) * 2.5)
        z[torch.rand(n_kept, n_latents, generator=g) < 0.35] = 0
        yield Batch(z, kept, input_ids, doc_ids, positions)


def firings(batches):
    """Every firing as (latent, value, doc, pos, batch index, row, col)."""
    out = []
    for bi, b in enumerate(batches):
        cells = torch.nonzero(b.kept).tolist()
        for i, (r, c) in enumerate(cells):
            for lat in range(b.z.shape[1]):
                v = float(b.z[i, lat])
                if v > 0:
                    out.append((lat, v, int(b.doc_ids[r, c]), int(b.positions[r, c]), bi, r, c))
    return out


def fine_bin(v: float) -> int:
    return min(N_HIST - 1, max(0, math.floor((math.log10(v) + 4) * 8) + 1))


@pytest.fixture(scope="module")
def run():
    batches = list(random_batches())
    stats = LatentStats(7, VOCAB, top_k=5, samples=3, window=6, window_before=3, seed=1)
    for b in batches:
        stats.update(b)
    return batches, stats, firings(batches)


def test_counts_sums_maxima_and_histograms_match_brute_force(run):
    batches, stats, fired = run
    assert stats.tokens == sum(int(b.kept.sum()) for b in batches)
    for lat in range(7):
        values = [f[1] for f in fired if f[0] == lat]
        assert stats.fires[lat] == len(values)
        assert stats.act_sum[lat].item() == pytest.approx(sum(values), rel=1e-6)
        assert stats.act_max[lat].item() == pytest.approx(max(values), rel=1e-6)
        expected = [0] * N_HIST
        for v in values:
            expected[fine_bin(v)] += 1
        assert stats.hist[lat].tolist() == expected


def window_of(batches, bi, r, c, lat, before=3, width=6):
    b = batches[bi]
    kept_index = {tuple(rc): i for i, rc in enumerate(torch.nonzero(b.kept).tolist())}
    tokens, acts = [], []
    for col in range(c - before, c - before + width):
        inside = 0 <= col < b.kept.shape[1] and b.doc_ids[r, col] >= 0
        tokens.append(int(b.input_ids[r, col]) if inside else -1)
        i = kept_index.get((r, col))
        acts.append(float(b.z[i, lat]) if i is not None else 0.0)
    return tokens, acts


def test_top_examples_are_the_highest_activations_with_their_context(run):
    batches, stats, fired = run
    for lat in range(7):
        best = sorted((f for f in fired if f[0] == lat), key=lambda f: -f[1])[:5]
        assert stats.top.value[lat].tolist() == pytest.approx([f[1] for f in best], rel=1e-6)
        assert stats.top.doc[lat].tolist() == [f[2] for f in best]
        assert stats.top.pos[lat].tolist() == [f[3] for f in best]
        for slot, f in enumerate(best):
            tokens, acts = window_of(batches, *f[4:], lat)
            assert stats.top.ctx_tokens[lat, slot].tolist() == tokens
            assert stats.top.ctx_acts[lat, slot].float().tolist() == pytest.approx(acts, rel=1e-3)
            assert stats.top.ctx_start[lat, slot] == f[3] - 3


def test_samples_lie_in_their_range_and_are_complete_where_a_range_is_small(run):
    _, stats, fired = run
    edges = [0.0, *RANGE_EDGES.tolist(), math.inf]
    for lat in range(7):
        for rng in range(N_RANGES):
            group = lat * N_RANGES + rng
            inside = sorted((f[2], f[3]) for f in fired if f[0] == lat and edges[rng] <= f[1] < edges[rng + 1])
            kept = stats.samples.doc[group] >= 0
            got = sorted(zip(stats.samples.doc[group][kept].tolist(), stats.samples.pos[group][kept].tolist()))
            assert len(got) == min(3, len(inside))
            assert set(got) <= set(inside)
            if len(inside) <= 3:
                assert got == inside
            for v in stats.samples.value[group][kept].tolist():
                assert edges[rng] <= v * (1 + 1e-6) and v < edges[rng + 1] * (1 + 1e-6)


def test_samples_are_uniform_within_a_range():
    # one latent firing at 10 tokens, all in one range; 2 of them sampled: each one in 1/5 of the runs
    trials, chosen = 600, torch.zeros(10)
    kept = torch.ones(1, 10, dtype=torch.bool)
    batch = Batch(
        torch.full((10, 1), 0.5),
        kept,
        torch.arange(10)[None],
        torch.zeros(1, 10, dtype=torch.long),
        torch.arange(10)[None],
    )
    for seed in range(trials):
        stats = LatentStats(1, 10, top_k=1, samples=2, window=2, seed=seed)
        stats.update(
            Batch(batch.z[:4], batch.kept[:, :4], batch.input_ids[:, :4], batch.doc_ids[:, :4], batch.positions[:, :4])
        )
        stats.update(
            Batch(batch.z[4:], batch.kept[:, 4:], batch.input_ids[:, 4:], batch.doc_ids[:, 4:], batch.positions[:, 4:])
        )
        group = N_RANGES * 0 + int(torch.bucketize(torch.tensor(0.5, dtype=torch.float64), RANGE_EDGES, right=True))
        chosen[stats.samples.pos[group]] += 1
    expected, sd = trials * 0.2, math.sqrt(trials * 0.2 * 0.8)
    assert ((chosen - expected).abs() < 4 * sd).all(), chosen


def test_next_token_shares_match_brute_force(run):
    batches, stats, fired = run
    totals = {}
    for lat, v, _, _, bi, r, c in fired:
        b = batches[bi]
        if c + 1 < b.kept.shape[1] and b.doc_ids[r, c + 1] >= 0:
            key = (lat, int(b.input_ids[r, c + 1]))
            totals[key] = totals.get(key, 0.0) + v
    tokens, shares = stats.top_next_tokens(3)
    for lat in range(7):
        ranked = sorted(((t, v) for (la, t), v in totals.items() if la == lat), key=lambda tv: -tv[1])[:3]
        assert tokens[lat].tolist() == [t for t, _ in ranked]
        assert shares[lat].tolist() == pytest.approx([v / stats.act_sum[lat].item() for _, v in ranked], rel=1e-6)


@pytest.mark.parametrize("dense_limit", [1 << 24, 0])
def test_keyed_sums_dense_and_sparse_agree_with_a_dict(dense_limit):
    g = torch.Generator().manual_seed(0)
    sums, reference = KeyedSums(1000, dense_limit=dense_limit), {}
    for _ in range(5):
        keys = torch.randint(0, 1000, (300,), generator=g)
        values = torch.rand(300, generator=g)
        sums.add(keys, values)
        for k, v in zip(keys.tolist(), values.tolist()):
            reference[k] = reference.get(k, 0.0) + v
    keys, values = sums.items()
    assert keys.tolist() == sorted(reference)
    assert values.tolist() == pytest.approx([reference[k] for k in sorted(reference)])
    probe = torch.tensor([5, 999, 0, 3])
    assert sums.get(probe).tolist() == pytest.approx([reference.get(k, 0.0) for k in probe.tolist()])


def test_top_per_group_by_hand():
    groups = torch.tensor([1, 0, 1, 1, 0])
    scores = torch.tensor([0.5, 2.0, 3.0, 1.0, 1.0])
    payload = torch.tensor([10, 11, 12, 13, 14])
    top, top_scores = top_per_group(groups, scores, payload, 3, 2)
    assert top.tolist() == [[11, 14], [12, 13], [-1, -1]]
    assert top_scores.tolist() == [[2.0, 1.0], [3.0, 1.0], [0.0, 0.0]]


def test_hist_edges_are_eight_per_decade():
    assert HIST_EDGES[0].item() == pytest.approx(1e-4) and HIST_EDGES[-1].item() == pytest.approx(1e4)
    assert (HIST_EDGES[8] / HIST_EDGES[0]).item() == pytest.approx(10.0)
