"""monosemantic.mathlm.pretrained: `mathlm train-saes` trains one TopK SAE per layer from one job,
resumes bit-for-bit, refuses another recipe; the export rounds every tensor to bf16, names the
model's and each file's sha256, and measures FVU and L0 on held-out text (checked by hand); a set
made on another model is refused. And the shipped set itself: at most 30 MB, one SAE per layer of
the built-in model, each matching the manifest."""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.data.corpora import open_corpus
from monosemantic.data.stream import ActivationStream, HarvestConfig
from monosemantic.mathlm.config import MathLMConfig
from monosemantic.mathlm.pretrained import (
    MANIFEST_FILE,
    PRETRAINED_DIR,
    PretrainedError,
    load_pretrained,
    model_sha256,
    read_manifest,
    train_pretrained,
)
from monosemantic.models import load_model
from monosemantic.sae import SAE
from monosemantic.sae.config import WEIGHTS_FILE
from monosemantic.train.checkpoint import checkpoint_dirs
from monosemantic.train.rundir import METRICS_FILE, TRAIN_CONFIG_FILE

LAYERS = ["layers.0.resid.post", "layers.1.resid.post"]  # the tiny GPT-2 has two
HELDOUT = 1500  # conftest.py's tiny_recipe
MAX_SHIPPED_BYTES = 30 * 1024 * 1024


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.integration
def test_one_sae_per_layer_from_one_job(trained):
    work, model, saes = trained
    assert list(saes) == LAYERS
    for name, sae in saes.items():
        assert (sae.cfg.arch, sae.d_in, sae.d_sae, sae.cfg.k, sae.cfg.hookpoint) == ("topk", 32, 64, 4, name)
        assert sae.cfg.dtype == "float32"  # trained in fp32; only the export rounds
        assert (work / name / WEIGHTS_FILE).is_file()
    assert json.loads((work / "hookpoints.json").read_text())["hookpoints"] == LAYERS


@pytest.mark.integration
def test_export_rounds_to_bf16_and_records_what_it_was_made_from(trained, exported):
    work, model, _ = trained
    dest, manifest = exported
    assert manifest == json.loads((dest / MANIFEST_FILE).read_text())
    assert list(manifest["saes"]) == LAYERS
    assert manifest["model"] == model
    assert manifest["model_sha256"] == sha(Path(model) / "model.safetensors")
    assert manifest["recipe"]["sae_options"]["d_sae"] == 64 and manifest["recipe"]["train"]["total_tokens"] == 4096
    for name in LAYERS:
        entry, trained_sae, shipped = manifest["saes"][name], SAE.load(work / name), SAE.load(dest / name)
        assert shipped.cfg.dtype == "bfloat16" and entry["dtype"] == "bfloat16"
        assert (entry["d_in"], entry["d_sae"], entry["k"], entry["tokens_trained"]) == (32, 64, 4, 4096)
        assert entry["sha256"] == sha(dest / name / WEIGHTS_FILE)
        for key, value in trained_sae.state_dict().items():
            assert torch.equal(shipped.state_dict()[key], value.to(torch.bfloat16)), (name, key)
        for file in (TRAIN_CONFIG_FILE, METRICS_FILE):
            assert (dest / name / file).read_bytes() == (work / name / file).read_bytes()
        up = load_pretrained(name, dest)
        assert up.cfg.dtype == "float32" and torch.equal(up.W_dec, shipped.W_dec.float())
    assert not [p.name for p in dest.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.integration
def test_heldout_fvu_and_l0_match_the_formulas_by_hand(trained, exported):
    """The reference reads the same first 1500 held-out tokens through the harvester (one chunk of
    exactly that size, so in another order) and runs each SAE's dense forward."""
    work, model, _ = trained
    dest, manifest = exported
    lm, tokenizer = load_model(model)
    stream = ActivationStream(
        lm, tokenizer, LAYERS, open_corpus("mathlm:heldout"), HELDOUT, HarvestConfig(chunk_tokens=HELDOUT)
    )
    x_all = next(stream).double()
    assert x_all.shape == (HELDOUT, 64)
    for name, x in zip(LAYERS, torch.split(x_all, stream.widths, 1)):
        sae = SAE.load(dest / name).with_dtype("float64")
        with torch.no_grad():
            out = sae(x)
        fvu = ((x - out.x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
        measured = manifest["saes"][name]["heldout"]
        assert measured["tokens"] == HELDOUT
        assert measured["fvu"] == pytest.approx(fvu.item(), rel=1e-4)
        assert measured["l0"] == pytest.approx((out.latents != 0).sum(1).double().mean().item(), rel=1e-4)
        dead = (out.latents != 0).sum(0) == 0
        assert measured["dead_fraction"] == pytest.approx(dead.double().mean().item(), abs=1 / 64)
        assert 0 < measured["fvu"] < 1.5 and 0 < measured["l0"] <= 4


@pytest.mark.integration
def test_a_stopped_training_goes_on_to_the_same_saes(trained, tiny_recipe, tmp_path):
    """The job killed after its step-4 checkpoint (what is newer removed) and run again: the SAEs
    of the uninterrupted job, bit for bit."""
    work, model, saes = trained
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    for name in LAYERS:
        *older, newest = checkpoint_dirs(copy / name)
        assert newest.name == "step_000000008" and older[-1].name == "step_000000004"
        shutil.rmtree(newest)
        for file in (WEIGHTS_FILE, "cfg.json"):
            (copy / name / file).unlink()
    resumed = train_pretrained(copy, dataclasses.replace(tiny_recipe, checkpoint_every=2), model=model, progress=False)
    for name in LAYERS:
        for key, value in saes[name].state_dict().items():
            assert torch.equal(resumed[name].state_dict()[key], value), (name, key)


@pytest.mark.integration
def test_another_recipe_on_the_same_directory_is_refused(trained, tiny_recipe):
    work, model, _ = trained
    differ = (
        r"another recipe \(sae.d_sae, train.dead_window, train.total_tokens differ\)"  # the window scales with them
    )
    with pytest.raises(ConfigError, match=differ):
        train_pretrained(work, dataclasses.replace(tiny_recipe, d_sae=128, tokens=8192), model=model, progress=False)


@pytest.mark.integration
def test_a_set_made_on_another_model_or_edited_is_refused(exported, tmp_path):
    dest, manifest = exported
    stale = tmp_path / "stale"
    shutil.copytree(dest, stale)
    (stale / MANIFEST_FILE).write_text(json.dumps({**manifest, "model_sha256": "ab" * 32}))
    with pytest.raises(PretrainedError, match=r"trained on a model whose weights have sha256 ababababab.*stale"):
        load_pretrained(LAYERS[0], stale)
    edited = tmp_path / "edited"
    shutil.copytree(dest, edited)
    saes = {**manifest["saes"], LAYERS[1]: {**manifest["saes"][LAYERS[1]], "sha256": "cd" * 32}}
    (edited / MANIFEST_FILE).write_text(json.dumps({**manifest, "saes": saes}))
    with pytest.raises(PretrainedError, match=r"not the one manifest.json lists"):
        load_pretrained(LAYERS[1], edited)
    with pytest.raises(
        PretrainedError, match=r"no pretrained SAE at layers.5.resid.post .* it has layers.0.resid.post, "
    ):
        load_pretrained("layers.5.resid.post", dest)
    with pytest.raises(PretrainedError, match=r"no pretrained SAEs in .*train-saes"):
        read_manifest(tmp_path / "nothing")


# ---- the shipped set ----------------------------------------------------------------------------

shipped = pytest.mark.skipif(
    not (PRETRAINED_DIR / MANIFEST_FILE).is_file(),
    reason=f"no shipped SAE set yet in {PRETRAINED_DIR}: it is made by `monosemantic mathlm train-saes` once the "
    "second-edition model is in monosemantic/mathlm/model",
)


@shipped
def test_the_shipped_set_fits_in_30_mb():
    files = [p for p in PRETRAINED_DIR.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    assert total <= MAX_SHIPPED_BYTES, f"{total / 2**20:.1f} MB in {PRETRAINED_DIR}"


@shipped
def test_the_shipped_set_has_one_sae_per_layer_each_as_the_manifest_says():
    manifest = read_manifest(PRETRAINED_DIR)  # refuses a set made on another model than the shipped one
    assert manifest["model"] == "builtin" and manifest["model_sha256"] == model_sha256("builtin")
    layers = MathLMConfig().n_layer
    assert list(manifest["saes"]) == [f"layers.{i}.resid.post" for i in range(layers)]
    options = manifest["recipe"]["sae_options"]
    for name, entry in manifest["saes"].items():
        sae = SAE.load(PRETRAINED_DIR / name)  # verifies the file against cfg.json's sha256
        assert sae.cfg.hookpoint == name and sae.cfg.model == "builtin" and sae.cfg.dtype == "bfloat16"
        assert sae.cfg.arch == "topk" and sae.cfg.k == entry["k"] == options["k"]
        assert sae.d_in == entry["d_in"] == MathLMConfig().d_model and sae.d_sae == entry["d_sae"] == options["d_sae"]
        assert entry["sha256"] == sha(PRETRAINED_DIR / name / WEIGHTS_FILE)
        assert entry["tokens_trained"] > 0 and 0 < entry["heldout"]["fvu"] < 1 and entry["heldout"]["l0"] <= entry["k"]
        assert load_pretrained(name).cfg.dtype == "float32"


@pytest.mark.integration
def test_train_saes_command_trains_exports_and_reports(tiny_model_dirs, tmp_path, capsys, one_thread):
    from monosemantic.cli.main import main

    out, export = tmp_path / "work", tmp_path / "saes"
    argv = ["-q", "mathlm", "train-saes", "--out", str(out), "--export", str(export)]
    argv += ["--model", str(tiny_model_dirs["gpt2"]), "--d-sae", "32", "--k", "2", "--tokens", "1024"]
    assert main([*argv, "--batch-size", "512", "--heldout-tokens", "300"]) == 0
    printed = capsys.readouterr().out.splitlines()
    manifest = read_manifest(export)
    assert list(manifest["saes"]) == LAYERS and manifest["recipe"]["sae_options"]["d_sae"] == 32
    for name, line in zip(LAYERS, printed[1:3]):
        m = manifest["saes"][name]["heldout"]
        assert line == f"  {name}: FVU {m['fvu']:.4f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%} on 300 tokens"
    assert printed[-1] == f"next: monosemantic view builtin --saes {export}"
    assert SAE.load(export / LAYERS[0]).cfg.dtype == "bfloat16"
