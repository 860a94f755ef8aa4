"""RunConfig and SAEOptions (monosemantic.train.config): the SAE options give the SAEConfig a run
trains, and the saved files of a run (old layout included) read back into the configuration that
wrote them."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from monosemantic.config import to_dict
from monosemantic.data.stream import HarvestConfig
from monosemantic.sae import SAEConfig
from monosemantic.train.config import DataConfig, RunConfig, SAEOptions, read_saved_run
from monosemantic.train.trainer import TrainConfig

OLD_LAYOUT = Path(__file__).parent / "old_layout"


def test_sae_options_default_to_the_sae_configs_defaults():
    shared = {f.name for f in dataclasses.fields(SAEConfig)} & {f.name for f in dataclasses.fields(SAEOptions)}
    assert shared == {f.name for f in dataclasses.fields(SAEOptions)} - {"expansion_factor"}
    defaults = SAEConfig(arch="topk", d_in=4, d_sae=8, k=2)
    for name in shared - {"arch", "d_sae", "k"}:
        assert getattr(SAEOptions(), name) == getattr(defaults, name), name


def test_sae_options_give_the_sae_of_a_width():
    cfg = SAEOptions(arch="topk", k=8, expansion_factor=4).sae_config(16, hookpoint="layers.1.mlp.out", model="m")
    assert (cfg.d_in, cfg.d_sae, cfg.k, cfg.hookpoint, cfg.model) == (16, 64, 8, "layers.1.mlp.out", "m")
    assert SAEOptions(arch="relu", l1_coefficient=2.0, d_sae=100).sae_config(16).d_sae == 100  # d_sae wins
    cfg = SAEConfig(arch="jumprelu", d_in=8, d_sae=24, l0_coefficient=3.0, jumprelu_bandwidth=0.1, hookpoint="h")
    assert SAEOptions.of(cfg).sae_config(8, hookpoint="h") == cfg


def test_records_keep_the_keys_of_the_files_runs_wrote_before():
    old = json.loads((OLD_LAYOUT / "hookpoints.json").read_text())
    run = RunConfig(  # the flags of test_pipeline.train_argv
        DataConfig(model="MODEL_DIR", hookpoint="layers.*.mlp.neurons"),
        HarvestConfig(batch_tokens=1024, chunk_tokens=4096),
        SAEOptions(arch="topk", k=8, expansion_factor=2),
        # float32: the matmul dtype those runs had by default (now "auto" resolves per machine)
        TrainConfig(
            batch_size=512,
            total_tokens=24_000,
            checkpoint_every=15,
            log_every=5,
            dead_window=5000,
            matmul_dtype="float32",
        ),
    )
    parent = run.parent_record(old["hookpoints"], old["source"])
    assert list(parent) == list(old) and list(parent["sae_options"]) == list(old["sae_options"])
    assert parent == old
    child = json.loads((OLD_LAYOUT / "layers.0.mlp.neurons.train_config.json").read_text())
    sae = SAEConfig(**child["sae"])
    record = run.record(sae, child["source"], hookpoint="layers.0.mlp.neurons")
    assert list(record) == list(child) and record == child


def test_a_saved_run_reads_back_once_into_its_configuration(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(OLD_LAYOUT / "train_config.json", single / "train_config.json")
    saved = read_saved_run(single)
    file = json.loads((OLD_LAYOUT / "train_config.json").read_text())
    assert saved.saved == file and saved.hookpoints is None and saved.source == file["source"]
    assert to_dict(saved.sae) == file["sae"] and to_dict(saved.run.train) == file["train"]
    assert saved.run.sae.sae_config(128, hookpoint=saved.sae.hookpoint, model=saved.sae.model) == saved.sae

    many = tmp_path / "many"
    many.mkdir()
    shutil.copy(OLD_LAYOUT / "hookpoints.json", many / "hookpoints.json")
    saved = read_saved_run(many)
    file = json.loads((OLD_LAYOUT / "hookpoints.json").read_text())
    assert saved.sae is None and saved.hookpoints == ["layers.0.mlp.neurons", "layers.1.mlp.neurons"]
    assert to_dict(saved.run.sae) == file["sae_options"] and to_dict(saved.run.data) == file["data"]


def test_a_directory_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is not a run directory: train_config.json is missing"):
        read_saved_run(tmp_path)
