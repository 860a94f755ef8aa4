"""Slow end-to-end runs (`make test-slow`, and CI): the demo's full toy benchmark, and the throughput
benchmark script. They check outcomes, not timings: speed is measured by benchmarks/, not by tests."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_demo_toy_benchmark_recovers_the_features_with_every_architecture(tmp_path):
    """What `make demo` runs, at its default size."""
    out = tmp_path / "toy.json"
    run = subprocess.run(
        [sys.executable, "-m", "monosemantic", "-q", "bench", "toy", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert "MMCS" in run.stdout
    results = json.loads(out.read_text())["results"]
    assert {r["arch"] for r in results} == {"topk", "batchtopk", "relu"}
    for r in results:
        assert r["mmcs"] >= 0.9, r
        assert r["fvu"] < 0.5, r


def test_throughput_benchmark_runs_and_reports_every_path(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "train_throughput.py"),
            "--sizes",
            "1024",
            "--rounds",
            "1",
            "--steps",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    [row] = json.loads(out.read_text())
    assert row["d_sae"] == 1024
    for path in ("fast_fp32", "fast_bf16", "dense_fp32"):
        assert row[path]["tokens_per_s"] > 0 and 0 < row[path]["roofline_fraction"]
    assert "fast_fp32" in run.stdout and "dense_fp32" in run.stdout


def test_the_demo_job_on_the_built_in_model(tmp_path):
    """What `make demo` runs (with fewer tokens): train on the embedding (the exact-equality study's SAE,
    examples/equality_ablation.md), evaluate spliced in, analyse, serve."""
    run = tmp_path / "demo"
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "monosemantic",
            "-q",
            "train",
            "--model",
            "builtin",
            "--hookpoint",
            "layers.0.resid.pre",
            "--expansion-factor",
            "4",
            "--k",
            "8",
            "--tokens",
            "500k",
            "--out",
            str(run),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    assert train.returncode == 0, train.stderr
    ev = subprocess.run(
        [sys.executable, "-m", "monosemantic", "-q", "eval", str(run), "--tokens", "20000"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert ev.returncode == 0, ev.stderr
    assert "CE loss recovered (zero ablation)" in ev.stdout
    metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert metrics["ce_spliced"] < metrics["ce_zero_ablated"] and metrics["ce_spliced"] < metrics["ce_mean_ablated"]
    assert metrics["ce_loss_recovered"] > 0.5 and metrics["fvu"] < 0.5 and metrics["l0"] <= 8
    analysis = subprocess.run(
        [sys.executable, "-m", "monosemantic", "-q", "analyze", str(run), "--tokens", "60k"],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=ROOT,
    )
    assert analysis.returncode == 0, analysis.stderr
    assert "at precision >= 0.9" in analysis.stdout and "some labelled features:" in analysis.stdout
    from monosemantic.analysis.store import FeatureStore

    store = FeatureStore.open(run)
    # precision is P(rule | fires). The demo at layer 3 had 19 features at 0.9; this one, at the embedding,
    # 191 (2026-12-02), with four features labelled "=" at recall >= 0.98 (examples/equality_ablation.md).
    assert store.count() == 4 * 192 and store.count(min_precision=0.9) >= 150
    equals = store.with_label("=", min_precision=0.9)
    assert any(f.label == '"="' and f.recall >= 0.9 for f in equals), equals
    # issue 16's target: >= 30% of the non-dense features that fire carry a concept or token label at
    # precision >= 0.8 (measured here 241 of 550, 44%)
    from monosemantic.analysis.label_text import CONCEPT_KINDS, TOKEN_KINDS

    good = [f for f in store.list(labelled=True, limit=store.count()) if f.kind in CONCEPT_KINDS + TOKEN_KINDS]
    dense = store.dense_latents()
    firing = sum(1 for i, n in enumerate(store.column("fires")) if n > 0 and i not in dense)
    assert sum(f.precision >= 0.8 for f in good) >= 0.3 * firing
    from dashboard_server import view_process

    with view_process(run) as url:  # `make demo` ends by serving the dashboard
        tokens = httpx.post(url + "api/text", json={"text": "12 + 7 = 19"}, timeout=60).json()["tokens"]
        assert "".join(t["token"] for t in tokens) == "12 + 7 = 19" and all(t["features"] for t in tokens)
        assert httpx.get(url + "feature/0", timeout=60).status_code == 200
