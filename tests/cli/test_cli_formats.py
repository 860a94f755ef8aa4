"""`monosemantic convert` and `monosemantic export`: what they write loads, matches the source, and
every flag has help; `eval` accepts a foreign SAE directly."""

import json

import numpy as np
import pytest
import torch

from monosemantic import SAE, SAEConfig, create_sae, load_sae
from monosemantic.cli.main import build_parser, main

pytestmark = pytest.mark.integration  # trains or analyses whole runs: see tests/conftest.py


def gemma_scope_params(path, d_in=8, d_sae=24):
    rng = np.random.default_rng(1)
    np.savez(
        path,
        W_enc=rng.normal(0, 0.3, (d_in, d_sae)).astype(np.float32),
        W_dec=rng.normal(0, 0.3, (d_sae, d_in)).astype(np.float32),
        b_enc=rng.normal(0, 0.3, d_sae).astype(np.float32),
        b_dec=rng.normal(0, 0.3, d_in).astype(np.float32),
        threshold=rng.uniform(0.1, 0.4, d_sae).astype(np.float32),
    )


def test_convert_writes_our_verified_files_with_the_same_maths(tmp_path, capsys):
    gemma_scope_params(tmp_path / "params.npz")
    assert main(["convert", str(tmp_path / "params.npz"), "--out", str(tmp_path / "ours")]) == 0
    assert "converted gemmascope jumprelu SAE (d_in=8, d_sae=24)" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "ours" / "cfg.json").read_text())
    assert cfg["arch"] == "jumprelu" and cfg["apply_b_dec_to_input"] is False and "sha256" in cfg
    converted, source = SAE.load(tmp_path / "ours"), load_sae(tmp_path / "params.npz")
    x = torch.randn(20, 8)
    assert torch.equal(converted.encode(x), source.encode(x))


def test_convert_refuses_a_non_empty_output_and_unknown_input(tmp_path, capsys):
    gemma_scope_params(tmp_path / "params.npz")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert main(["convert", str(tmp_path / "params.npz"), "--out", str(tmp_path / "busy")]) == 2
    assert "busy already exists and is not empty" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["convert", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no SAE found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_convert_allow_square(tmp_path, capsys):
    gemma_scope_params(tmp_path / "params.npz", d_in=8, d_sae=8)
    assert main(["convert", str(tmp_path / "params.npz"), "--out", str(tmp_path / "a")]) == 2
    assert "--allow-square" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "params.npz"), "--out", str(tmp_path / "a"), "--allow-square"]) == 0


@pytest.mark.parametrize("fmt, weights", [("saelens", "sae_weights.safetensors"), ("sparsify", "sae.safetensors")])
def test_export_writes_files_that_load_back_to_the_same_sae(tmp_path, fmt, weights):
    sae = create_sae(SAEConfig(arch="topk", d_in=8, d_sae=24, k=3))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.2)
    sae.save(tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
    assert (tmp_path / fmt / weights).is_file()
    back = load_sae(tmp_path / fmt)
    x = torch.randn(20, 8)
    torch.testing.assert_close(back.encode(x), sae.eval().encode(x))


def test_export_to_sparsify_refuses_other_architectures(tmp_path, capsys):
    create_sae(SAEConfig(arch="relu", d_in=8, d_sae=24)).save(tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "sparsify", "--out", str(tmp_path / "x")]) == 2
    assert "only TopK SAEs" in capsys.readouterr().err


def test_eval_accepts_a_foreign_sae(tmp_path, capsys):
    gemma_scope_params(tmp_path / "params.npz")
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))
    (tmp_path / "gs").mkdir()
    (tmp_path / "params.npz").rename(tmp_path / "gs" / "params.npz")
    assert main(["eval", str(tmp_path / "gs"), str(tmp_path / "acts.npy")]) == 0
    assert "FVU" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["convert", "export"])
def test_every_flag_has_help(command):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"


def test_spliced_eval_reads_a_foreign_sae_as_it_reads_its_conversion(tmp_path, tiny_model_dirs, capsys):
    """Commands that take a run directory load it with load_sae (any format), not SAE.load (ours only)."""
    from monosemantic.hooks import hookpoint_width
    from monosemantic.models import load_model

    model_dir, hookpoint = str(tiny_model_dirs["gpt2"]), "layers.1.mlp.neurons"
    d_in = hookpoint_width(load_model(model_dir)[0], hookpoint)
    (tmp_path / "gs").mkdir()
    gemma_scope_params(tmp_path / "gs" / "params.npz", d_in=d_in, d_sae=2 * d_in)
    assert main(["-q", "convert", str(tmp_path / "gs"), "--out", str(tmp_path / "ours")]) == 0
    metrics = {}
    for name in ("gs", "ours"):
        argv = ["-q", "eval", str(tmp_path / name), "--model", model_dir, "--hookpoint", hookpoint, "--tokens", "2000"]
        assert main(argv) == 0
        assert "CE loss recovered" in capsys.readouterr().out
        metrics[name] = json.loads((tmp_path / name / "eval.json").read_text())["metrics"]
    assert metrics["gs"] == metrics["ours"] and metrics["gs"]["n_tokens"] > 0 and metrics["gs"]["l0"] > 0
