"""The benchmark suite and its report on tiny runs of two widths."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import tiny_train_argv

from monosemantic.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def runs(tiny_run, tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    narrow = root / "narrow"
    shutil.copytree(tiny_run, narrow)
    assert main(["-q", "analyze", str(narrow), "--tokens", "4000", "--batch-tokens", "1024"]) == 0
    wide = root / "wide"
    assert main(tiny_train_argv(tiny_model_dirs["gpt2"], wide, expansion_factor=4)) == 0
    return narrow, wide


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "monosemantic",
            "-q",
            "--threads",
            "1",
            "benchmark",
            *map(str, runs),
            "--out",
            str(out),
            "--eval-tokens",
            "3000",
            "--probe-documents",
            "600",
            "--toy-tokens",
            "20000",
            "--concept-tokens",
            "1500",
            "--absorption-tokens",
            "3000",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr
    return out, run.stdout


@pytest.mark.process
@pytest.mark.slow  # minutes of whole-run training on 2 cores: `make test-slow` (CI runs it)
def test_benchmark_writes_json_markdown_and_html(report):
    out, printed = report
    assert "narrow (topk, 256, k=8)" in printed and "wide (topk, 512, k=8)" in printed
    data = json.loads((out / "benchmark.json").read_text())
    assert data["schema"] == "monosemantic-benchmark/1" and len(data["runs"]) == 2
    narrow, wide = data["runs"]
    assert {"fvu", "l0", "ce_loss_recovered", "kl_spliced", "dead_fraction"} <= set(narrow["core"])
    assert 0 < narrow["toy"]["mmcs"] <= 1
    assert narrow["labels"]["features"] == 256 and wide["labels"] is None  # only the narrow run was analysed
    for r, width in ((narrow, 256), (wide, 512)):  # the labelling benchmark needs no analysis
        assert (r["concepts"]["sae"]["features"], r["concepts"]["neurons"]["features"]) == (width, 256)
        assert r["concepts"]["concepts"] == len(r["concepts"]["sae"]["per_concept"]) > 0
    assert "concept recall" in printed
    for r in (narrow, wide):
        a = r["absorption"]
        assert a["tokens"] >= 3000 and a["concepts"] == len(a["per_concept"])
        assert a["concepts"] == 0 or 0 <= a["mean_absorption"] <= 1
    assert {row["property"] for row in narrow["probing"]} >= {"language", "operation"}
    assert all(0 <= row["best_feature"] <= 1 and 0 <= row["linear_probe_neurons"] <= 1 for row in narrow["probing"])
    [split] = data["splitting"]
    assert (split["d_narrow"], split["d_wide"]) == (256, 512) and 0 <= split["wide_matched_fraction"] <= 1
    md = (out / "report.md").read_text()
    assert "## Sparsity-fidelity frontier" in md and "![frontier](frontier.png)" in md
    assert "## Concept recall (labelling benchmark)" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<table>" in page and 'src="http' not in page


@pytest.mark.slow  # shares the report fixture above: `make test-slow`
@pytest.mark.process
def test_the_report_renders_in_chromium(report):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.fail(f"{chromium} is missing: `make test` installs it (apt-get install chromium)")
    out, _ = report
    shots = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto((out / "report.html").as_uri())
        assert page.locator("h2").all_inner_texts()[:2] == ["Sparsity-fidelity frontier", "Sparse probing"]
        assert page.locator("table").first.locator("tr").count() == 3  # header + two runs
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) == 4 and min(widths) > 300  # every embedded plot decoded
        page.screenshot(path=str(shots / "benchmark-report.png"), full_page=True)
        browser.close()
    assert errors == []


def test_the_frontier_is_the_pareto_set_by_hand():
    from monosemantic.eval.report import frontier_rows

    def run(name, l0, fvu):
        return {
            "name": name,
            "sae": {"arch": "topk", "d_sae": 8, "k": 2},
            "toy": None,
            "core": {"l0": l0, "fvu": fvu, "ce_loss_recovered": 0.9, "kl_spliced": 0.1, "dead_fraction": 0.0},
        }

    rows = frontier_rows(
        [run("a", 8, 0.30), run("b", 8, 0.20), run("c", 16, 0.25), run("d", 16, 0.10), run("e", 4, 0.50)]
    )
    assert [r["on_frontier"] for r in rows] == [False, True, False, True, True]
