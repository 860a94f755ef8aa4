"""The benchmark suite and its report on tiny runs of two widths."""

import json
import shutil

import pytest

from monosemantic.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tiny_run, tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    narrow = root / "narrow"
    shutil.copytree(tiny_run, narrow)
    assert main(["-q", "analyze", str(narrow), "--tokens", "4000", "--batch-tokens", "1024"]) == 0
    wide = root / "wide"
    assert main(["-q", "train", "--model_path", str(tiny_model_dirs["gpt2"]), "--hookpoint", "layers.1.mlp.neurons",
                 "--expansion_factor", "4", "--k", "8", "--tokens", "16k", "--batch-size", "512",
                 "--batch-tokens", "1024", "--chunk-tokens", "4096", "--out", str(wide)]) == 0
    return narrow, wide


def test_benchmark_writes_json_markdown_and_html(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["-q", "benchmark", *map(str, runs), "--out", str(out), "--eval-tokens", "3000",
                 "--probe-documents", "600", "--toy-tokens", "20000"]) == 0
    printed = capsys.readouterr().out
    assert "narrow (topk, 256, k=8)" in printed and "wide (topk, 512, k=8)" in printed
    data = json.loads((out / "benchmark.json").read_text())
    assert data["schema"] == "monosemantic-benchmark/1" and len(data["runs"]) == 2
    narrow, wide = data["runs"]
    assert {"fvu", "l0", "ce_loss_recovered", "kl_spliced", "dead_fraction"} <= set(narrow["core"])
    assert 0 < narrow["toy"]["mmcs"] <= 1
    assert narrow["labels"]["features"] == 256 and wide["labels"] is None  # only the narrow run was analysed
    assert {row["property"] for row in narrow["probing"]} >= {"language", "operation"}
    assert all(0 <= row["best_feature"] <= 1 and 0 <= row["linear_probe_neurons"] <= 1 for row in narrow["probing"])
    [split] = data["splitting"]
    assert (split["d_narrow"], split["d_wide"]) == (256, 512) and 0 <= split["wide_matched_fraction"] <= 1
    md = (out / "report.md").read_text()
    assert "## Sparsity-fidelity frontier" in md and "![frontier](frontier.png)" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<table>" in page and "src=\"http" not in page
