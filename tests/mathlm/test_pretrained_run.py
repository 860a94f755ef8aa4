"""monosemantic.mathlm.pretrained_run and `monosemantic view builtin`: a pretrained SAE becomes an
analysed run directory in the cache on first use, is reused after, rebuilt when what it was made
from changes, never left half made; and (slow) `monosemantic view builtin` serves a feature page of
the shipped set on a fresh cache, with no training step."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from monosemantic.analysis.analyze import AnalyzeConfig
from monosemantic.analysis.store import FeatureStore
from monosemantic.cli.main import main
from monosemantic.dashboard import create_app
from monosemantic.mathlm import pretrained_run as pr
from monosemantic.mathlm.pretrained import MANIFEST_FILE, PRETRAINED_DIR, PretrainedError, load_pretrained
from monosemantic.sae import SAE
from monosemantic.train.rundir import EVAL_FILE, METRICS_FILE, TRAIN_CONFIG_FILE

ROOT = Path(__file__).resolve().parents[2]
HOOKPOINT = "layers.1.resid.post"
TINY_ANALYSIS = AnalyzeConfig(tokens=2000, batch_tokens=1024, top_k=4, window=8)


@pytest.fixture
def counted(monkeypatch):
    """Counts the analyses `pretrained_run` runs (they still run)."""
    calls = []

    def analyze(run_dir, cfg, **kwargs):
        calls.append(Path(run_dir))
        return real(run_dir, cfg, **kwargs)

    real = pr.analyze
    monkeypatch.setattr(pr, "analyze", analyze)
    return calls


def build(dest, cache, **kwargs):
    return pr.pretrained_run(1, directory=dest, cache=cache, analysis=TINY_ANALYSIS, progress=False, **kwargs)


@pytest.mark.integration
def test_first_use_makes_an_analysed_run_directory_that_the_dashboard_serves(exported, tmp_path, counted):
    dest, manifest = exported
    run = build(dest, tmp_path)
    assert run == tmp_path / "builtin" / HOOKPOINT and len(counted) == 1
    sae = SAE.load(run)  # float32, the exact upcast of the shipped bf16 SAE
    assert sae.cfg.dtype == "float32"
    for key, value in load_pretrained(HOOKPOINT, dest).state_dict().items():
        assert torch.equal(sae.state_dict()[key], value), key
    for file in (TRAIN_CONFIG_FILE, METRICS_FILE):
        assert (run / file).read_bytes() == (dest / HOOKPOINT / file).read_bytes()
    assert json.loads((run / EVAL_FILE).read_text())["metrics"] == manifest["saes"][HOOKPOINT]["heldout"]
    store = FeatureStore.open(run)
    assert store.n_latents == 64 and store.settings["analysis"]["tokens"] == 2000
    stamp = json.loads((run / pr.STAMP_FILE).read_text())
    assert stamp["sae_sha256"] == manifest["saes"][HOOKPOINT]["sha256"]
    assert stamp["model_sha256"] == manifest["model_sha256"] and stamp["analysis"]["tokens"] == 2000

    assert build(dest, tmp_path) == run and len(counted) == 1  # reused, not analysed again
    with TestClient(create_app(run), base_url="http://127.0.0.1") as client:
        page = client.get("/feature/7")
        assert page.status_code == 200 and "<h1>Feature 7</h1>" in page.text
        assert client.get("/api/run").json()["sae"]["hookpoint"] == HOOKPOINT
    assert sorted(p.name for p in (tmp_path / "builtin").iterdir()) == [".lock", HOOKPOINT]


@pytest.mark.integration
def test_a_cache_made_from_anything_else_is_rebuilt(exported, tmp_path, counted):
    dest, _ = exported
    run = build(dest, tmp_path)
    stamp = json.loads((run / pr.STAMP_FILE).read_text())
    (run / pr.STAMP_FILE).write_text(json.dumps({**stamp, "sae_sha256": "0" * 64}))  # another SAE's cache
    assert build(dest, tmp_path) == run and len(counted) == 2
    assert json.loads((run / pr.STAMP_FILE).read_text()) == stamp
    other = AnalyzeConfig(tokens=1500, batch_tokens=1024, top_k=4, window=8)
    pr.pretrained_run(1, directory=dest, cache=tmp_path, analysis=other, progress=False)
    assert len(counted) == 3 and FeatureStore.open(run).settings["analysis"]["tokens"] == 1500
    (run / "features" / "manifest.json").unlink()  # a damaged store
    assert build(dest, tmp_path) == run and len(counted) == 4
    assert FeatureStore.open(run).settings["analysis"]["tokens"] == 2000


@pytest.mark.integration
def test_a_killed_first_use_leaves_no_half_cache(exported, tmp_path, monkeypatch):
    dest, _ = exported
    real = pr.analyze

    def killed(run_dir, cfg, **kwargs):
        (Path(run_dir) / "features").mkdir()
        (Path(run_dir) / "features" / "half.sqlite").write_text("")
        raise KeyboardInterrupt

    monkeypatch.setattr(pr, "analyze", killed)
    with pytest.raises(KeyboardInterrupt):
        build(dest, tmp_path)
    assert sorted(p.name for p in (tmp_path / "builtin").iterdir()) == [".lock"]
    # what a SIGKILL leaves: the temporary directory of atomic_directory
    leftover = tmp_path / "builtin" / f".{HOOKPOINT}.x1y2.tmp"
    leftover.mkdir()
    (leftover / "cfg.json").write_text("{}")
    monkeypatch.setattr(pr, "analyze", real)
    run = build(dest, tmp_path)
    assert sorted(p.name for p in (tmp_path / "builtin").iterdir()) == [".lock", HOOKPOINT]
    assert FeatureStore.open(run).n_latents == 64


@pytest.mark.integration
def test_a_stale_set_or_an_unknown_layer_is_refused_before_anything_is_built(exported, tmp_path):
    dest, manifest = exported
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / MANIFEST_FILE).write_text(json.dumps({**manifest, "model_sha256": "ab" * 32}))
    with pytest.raises(PretrainedError, match="they are stale"):
        build(stale, tmp_path / "cache")
    with pytest.raises(PretrainedError, match=r"no pretrained SAE at layers.7.resid.post .* it has layers.0"):
        pr.pretrained_run(7, directory=dest, cache=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MONOSEMANTIC_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pr.cache_root() == tmp_path / ".cache" / "monosemantic"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pr.cache_root() == tmp_path / "xdg" / "monosemantic"
    monkeypatch.setenv("MONOSEMANTIC_CACHE", str(tmp_path / "mine"))
    assert pr.cache_root() == tmp_path / "mine"


def test_view_flags_for_builtin_are_refused_elsewhere_and_a_missing_set_is_one_error(tmp_path, capsys):
    assert main(["view", str(tmp_path), "--layer", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --layer picks a pretrained SAE; it goes with RUN_DIR 'builtin', not '{tmp_path}'"
    )
    assert main(["view", "builtin", "--saes", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: no pretrained SAEs in {tmp_path / 'none'}") and len(err.splitlines()) == 1


# ---- end to end on the shipped set -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.skipif(
    not (PRETRAINED_DIR / MANIFEST_FILE).is_file(),
    reason=f"no shipped SAE set yet in {PRETRAINED_DIR} (made by `monosemantic mathlm train-saes`)",
)
def test_view_builtin_serves_a_feature_page_on_a_fresh_cache_with_no_training(tmp_path):
    """What a fresh clone runs (`make view`): no run directory, an empty cache."""
    env = {**os.environ, "MONOSEMANTIC_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "monosemantic", "-q", "--threads", "2", "view", "builtin", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "http://" in line:
                break
        url = lines[-1].split()[-4] if lines and "http://" in lines[-1] else None
        assert url and url.startswith("http://127.0.0.1:"), "".join(lines)
        ready = time.perf_counter() - start
        page = httpx.get(url + "feature/0", timeout=30)
        assert page.status_code == 200 and "<h1>Feature 0</h1>" in page.text
        run = httpx.get(url + "api/run", timeout=30).json()
        assert run["sae"]["hookpoint"] == "layers.3.resid.post" and run["sae"]["dtype"] == "float32"
        assert any("analysing" in line for line in lines), "".join(lines)  # the first use's progress line
        print(f"first use: dashboard ready after {ready:.1f} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    run_dir = tmp_path / "cache" / "builtin" / "layers.3.resid.post"
    assert FeatureStore.open(run_dir).n_latents == load_pretrained("layers.3.resid.post").d_sae
    assert not list(tmp_path.glob("runs"))  # nothing trained, nothing written beside the cache
