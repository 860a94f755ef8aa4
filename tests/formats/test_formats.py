"""monosemantic.formats: format detection, `load_sae` on our own files and on nothing, and pickles
with code in them, which must be refused without the code ever running."""

import json
import pathlib

import numpy as np
import pytest
import torch

from monosemantic import SAE, SAEConfig, create_sae, load_sae
from monosemantic.formats import detect_format
from monosemantic.sae import SAEFormatError


class Canary:
    """Unpickling this calls Path.touch(target): the file appears only if the pickle's code runs."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def armed_state_dict(canary: pathlib.Path) -> dict:
    return {
        "pre_bias": torch.zeros(4),
        "latent_bias": torch.zeros(8),
        "encoder.weight": torch.zeros(8, 4),
        "decoder.weight": torch.zeros(4, 8),
        "activation": "ReLU",
        "payload": Canary(canary),
    }


@pytest.mark.parametrize("layout", ["openai .pt", "dictionary_learning ae.pt"])
def test_a_pickle_with_code_in_it_is_refused_and_its_code_never_runs(tmp_path, layout):
    canary = tmp_path / "canary"
    if layout == "openai .pt":
        path = tmp_path / "sae.pt"
    else:
        path = tmp_path / "run" / "ae.pt"
        path.parent.mkdir()
        (path.parent / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoder"}}))
    torch.save(armed_state_dict(canary), path)
    for load in (load_sae, lambda p: load_sae(p.parent) if p.name == "ae.pt" else load_sae(p)):
        with pytest.raises(SAEFormatError, match=r"refused to unpickle \(it references \S+\).*weights_only=True"):
            load(path)
        assert not canary.exists()
    torch.load(path, weights_only=False)  # the control: the file really is armed
    assert canary.exists()


def test_formats_are_told_apart_by_their_files(tmp_path):
    def make(name, files: dict):
        d = tmp_path / name
        d.mkdir()
        for fname, text in files.items():
            (d / fname).write_text(text)
        return d

    assert detect_format(make("ours", {"cfg.json": '{"arch": "topk"}', "sae.safetensors": ""})) == "monosemantic"
    assert (
        detect_format(make("sparsify", {"cfg.json": '{"d_in": 8, "k": 4, "num_latents": 32}', "sae.safetensors": ""}))
        == "sparsify"
    )
    assert detect_format(make("saelens", {"cfg.json": "{}", "sae_weights.safetensors": ""})) == "saelens"
    assert detect_format(make("dl", {"config.json": "{}", "ae.pt": ""})) == "dictionary_learning"
    assert detect_format(tmp_path / "dl" / "ae.pt") == "dictionary_learning"
    assert detect_format(make("gs", {"params.npz": ""})) == "gemmascope"
    assert detect_format(make("oa", {"x.pt": ""}) / "x.pt") == "openai"
    # a damaged cfg.json of ours is left to our loader, whose errors say what is wrong
    assert detect_format(make("broken", {"cfg.json": "{arch: topk", "sae.safetensors": ""})) == "monosemantic"
    assert detect_format(make("empty", {})) is None
    assert detect_format(tmp_path / "nowhere") is None


def test_load_sae_reads_our_files_through_the_verified_path(tmp_path):
    sae = create_sae(SAEConfig(arch="jumprelu", d_in=8, d_sae=16))
    sae.save(tmp_path)
    loaded = load_sae(tmp_path)
    assert loaded.cfg == sae.cfg and not loaded.training
    data = bytearray((tmp_path / "sae.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "sae.safetensors").write_bytes(bytes(data))
    with pytest.raises(SAEFormatError, match=r"do not match the sha256"):
        load_sae(tmp_path)


def test_nothing_to_load_is_a_clear_error(tmp_path):
    with pytest.raises(SAEFormatError, match=r"no SAE found; expected one of: our cfg.json"):
        load_sae(tmp_path)
    with pytest.raises(SAEFormatError, match=r"nowhere: no such file or directory"):
        load_sae(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SAEFormatError, match=r"no SAE found"):
        load_sae(tmp_path)


def test_sae_load_reads_only_our_files_and_points_to_load_sae(tmp_path):
    np.savez(
        tmp_path / "params.npz",
        W_enc=np.zeros((4, 8), np.float32),
        W_dec=np.zeros((8, 4), np.float32),
        b_enc=np.zeros(8, np.float32),
        b_dec=np.zeros(4, np.float32),
        threshold=np.zeros(8, np.float32),
    )
    with pytest.raises(SAEFormatError, match=r"cfg\.json: missing.*load with monosemantic\.load_sae"):
        SAE.load(tmp_path)
    assert load_sae(tmp_path).cfg.arch == "jumprelu"
    (tmp_path / "cfg.json").write_text(json.dumps({"d_in": 4, "d_sae": 8}))  # somebody else's cfg.json
    with pytest.raises(SAEFormatError, match=r"no 'arch' key, so not an SAE saved by monosemantic"):
        SAE.load(tmp_path)


def test_convert_and_export_state_and_override_the_dtype_policy(tmp_path, capsys):
    """A float16 Gemma Scope file computes in float32 by default (as its tools do), cfg.json says so,
    and --dtype overrides it on convert and on export."""
    from monosemantic.cli.main import main

    rng = np.random.default_rng(0)
    shapes = {"W_enc": (4, 8), "W_dec": (8, 4), "b_enc": (8,), "b_dec": (4,), "threshold": (8,)}
    np.savez(tmp_path / "params.npz", **{k: rng.normal(0, 0.3, s).astype(np.float16) for k, s in shapes.items()})
    assert main(["convert", str(tmp_path / "params.npz"), "--out", str(tmp_path / "default")]) == 0
    cfg = json.loads((tmp_path / "default" / "cfg.json").read_text())
    assert (cfg["dtype"], cfg["origin"]["file_dtype"]) == ("float32", "float16")
    assert cfg["origin"]["dtype_policy"] == "upcast to float32, as SAELens' Gemma Scope loader does"
    assert main(["convert", str(tmp_path / "params.npz"), "--out", str(tmp_path / "half"), "--dtype", "float16"]) == 0
    assert json.loads((tmp_path / "half" / "cfg.json").read_text())["dtype"] == "float16"
    assert (
        main(
            [
                "export",
                str(tmp_path / "default"),
                "--format",
                "saelens",
                "--out",
                str(tmp_path / "sl"),
                "--dtype",
                "bfloat16",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "sl" / "cfg.json").read_text())["dtype"] == "bfloat16"
    capsys.readouterr()
