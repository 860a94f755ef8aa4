"""A routed SAE through the CLI on the built-in model: `train --arch routed --experts E` (and its
timing.json), `analyze`, and `export` to a format without a router."""

import json

import pytest

from monosemantic import load_sae
from monosemantic.cli.main import main
from monosemantic.sae import SAE
from monosemantic.sae.routed import RoutedSAE


@pytest.mark.slow
def test_train_analyze_and_export_a_routed_sae(tmp_path):
    run = tmp_path / "run"
    flags = ["--model", "builtin", "--hookpoint", "layers.3.resid.post", "--arch", "routed", "--experts", "4"]
    sizes = ["--d-sae", "512", "--k", "8", "--tokens", "16384", "--batch-size", "1024", "--out", str(run)]
    assert main(["-q", "train", *flags, *sizes]) == 0
    sae = SAE.load(run)
    assert isinstance(sae, RoutedSAE) and sae.cfg.experts == 4
    timing = json.loads((run / "timing.json").read_text())
    assert timing["tokens"] == 16384 and timing["seconds"]["harvest"] > 0
    assert main(["analyze", str(run), "--tokens", "4k"]) == 0
    assert main(["export", str(run), "--format", "sparsify", "--out", str(tmp_path / "x")]) == 0
    [exported] = [p.parent for p in (tmp_path / "x").rglob("cfg.json")]
    plain = load_sae(exported)
    assert plain.cfg.arch == "topk" and plain.d_sae == 512
