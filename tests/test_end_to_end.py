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
    """What `make demo` runs (with fewer tokens): train on layer 3's residual stream, evaluate spliced in."""
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
            "layers.3.resid.post",
            "--expansion-factor",
            "16",
            "--k",
            "32",
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
    assert metrics["ce_loss_recovered"] > 0.5 and metrics["fvu"] < 0.5 and metrics["l0"] <= 32
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
    # precision is P(rule | fires) since labels version 2 (it was P(fires | rule), where this demo had > 50
    # features at 0.9); with the corrected definition it had 19 (2026-12-01). The concepts issue's target,
    # 30% of non-dense features at precision >= 0.8, is not met yet and is not what this test checks.
    assert store.count() == 16 * 192 and store.count(min_precision=0.9) >= 10
    from dashboard_server import view_process

    with view_process(run) as url:  # `make demo` ends by serving the dashboard
        tokens = httpx.post(url + "api/text", json={"text": "12 + 7 = 19"}, timeout=60).json()["tokens"]
        assert "".join(t["token"] for t in tokens) == "12 + 7 = 19" and all(t["features"] for t in tokens)
        assert httpx.get(url + "feature/0", timeout=60).status_code == 200
