"""What a training job on a model is, and what its run directory records of it.

    run = RunConfig(DataConfig(hookpoint="layers.3.resid.post"), HarvestConfig(),
                    SAEOptions(arch="topk", expansion_factor=16, k=32), TrainConfig(total_tokens=10**6))

The CLI composes a `RunConfig` from its flags; `pipeline.py` trains from it. The files a run writes
(their keys are a contract: old run directories must resume):

    train_config.json   one SAE: {"sae": SAEConfig, "train", "data", "harvest", "source"} (+ "sweep")
    hookpoints.json     the parent of several hookpoints' runs: {"hookpoints", "data", "harvest",
                        "train", "sae_options": SAEOptions, "source"}

`source` describes the activations (`ActivationStream.describe`, the corpus, the global batch
size), so that `--resume` can refuse a model or corpus that changed. `read_saved_run` reads either
file back, once, for `--resume`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from monosemantic.config import OMIT_NONE, from_dict, to_dict
from monosemantic.data.stream import HarvestConfig
from monosemantic.sae import SAEConfig
from monosemantic.sae.config import TRANSCODER_ARCHS
from monosemantic.train.checkpoint import SAVED_BEFORE
from monosemantic.train.rundir import PARENT_FILE, TRAIN_CONFIG_FILE, read_train_config
from monosemantic.train.trainer import TrainConfig


@dataclass
class DataConfig:
    model: str = "builtin"
    """model: a local Hugging Face model directory, or 'builtin' (the shipped math LM)"""
    hookpoint: str = "layers.3.resid.post"
    """where to read activations, e.g. layers.3.resid.post, layers.4.mlp.neurons, or a module path; several
    (a comma-separated list, or a glob such as 'layers.*.mlp.neurons') train one SAE each from one forward"""
    corpus: str = "mathlm"
    """text to run: mathlm, mathlm:heldout, a .txt / .jsonl file, or a saved Hugging Face dataset"""
    model_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype to run the model in"""
    cache: str | None = None
    """harvest into this activation cache first, and train from it (reused when it holds this source)"""


@dataclass
class SAEOptions:
    """The SAE of a job before its input width is known: `SAEConfig`'s knobs (same defaults, same
    meaning; see its field docs), with the size as a multiple of d_in unless `d_sae` is given. The
    field order is that of `sae_options` in hookpoints.json."""

    arch: str = "topk"
    k: int | None = SAEConfig.k
    dtype: Literal["float32", "bfloat16", "float16", "float64"] = SAEConfig.dtype
    apply_b_dec_to_input: bool = SAEConfig.apply_b_dec_to_input
    l1_coefficient: float = SAEConfig.l1_coefficient
    l0_coefficient: float = SAEConfig.l0_coefficient
    jumprelu_bandwidth: float = SAEConfig.jumprelu_bandwidth
    k_aux: int | None = SAEConfig.k_aux
    auxk_coef: float = SAEConfig.auxk_coef
    matryoshka_prefixes: tuple[int, ...] | None = field(default=SAEConfig.matryoshka_prefixes, metadata=OMIT_NONE)
    experts: int | None = field(default=SAEConfig.experts, metadata=OMIT_NONE)
    d_sae: int | None = None
    """number of latents; overrides expansion_factor"""
    expansion_factor: int = 32
    """d_sae = expansion_factor x d_in"""

    @classmethod
    def of(cls, cfg: SAEConfig) -> SAEOptions:
        """The options that give back `cfg` (its size as d_sae)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if f.name != "expansion_factor"})

    def sae_config(
        self,
        d_in: int,
        *,
        hookpoint: str | None = None,
        model: str | None = None,
        d_out: int | None = None,
        output_hookpoint: str | None = None,
    ) -> SAEConfig:
        """The SAE that reads vectors of width `d_in` (at `hookpoint` of `model`, recorded in cfg.json);
        a transcoder also writes vectors of width `d_out` at `output_hookpoint`."""
        knobs = {k: v for k, v in to_dict(self).items() if k not in ("d_sae", "expansion_factor")}
        if self.arch in TRANSCODER_ARCHS:  # its b_dec is the output's bias
            knobs["apply_b_dec_to_input"] = False
        d_sae = self.d_sae or self.expansion_factor * d_in
        return SAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            hookpoint=hookpoint,
            model=model,
            d_out=d_out,
            output_hookpoint=output_hookpoint,
            **knobs,
        )


@dataclass
class RunConfig:
    """One training job on a model: where its activations come from, how they are harvested, its
    SAE(s) and its trainer. The field order is the order `check_same_config` reports them in."""

    data: DataConfig = field(default_factory=DataConfig)
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    sae: SAEOptions = field(default_factory=SAEOptions)
    train: TrainConfig = field(default_factory=TrainConfig)

    def record(self, sae: SAEConfig, source: dict, *, hookpoint: str | None = None) -> dict:
        """train_config.json of one SAE of this job (`hookpoint`: its own, one of several)."""
        data = to_dict(self.data) if hookpoint is None else {**to_dict(self.data), "hookpoint": hookpoint}
        return {
            "sae": to_dict(sae),
            "train": to_dict(self.train),
            "data": data,
            "harvest": to_dict(self.harvest),
            "source": source,
        }

    def parent_record(self, hookpoints: list[str], source: dict) -> dict:
        """hookpoints.json: the shared configuration of one SAE per hookpoint."""
        return {
            "hookpoints": hookpoints,
            "data": to_dict(self.data),
            "harvest": to_dict(self.harvest),
            "train": to_dict(self.train),
            "sae_options": to_dict(self.sae),
            "source": source,
        }


@dataclass
class SavedRun:
    """A run directory's saved configuration, as `--resume` continues it: a single run's
    train_config.json, or the hookpoints.json of several hookpoints' runs under one parent."""

    path: Path
    saved: dict
    """the file as read (the CLI checks the flags given with --resume against it)"""
    run: RunConfig
    """the job; of a single run, `run.sae` holds the options that give back its SAE"""
    source: dict
    """the activations it trained on (`RunConfig.record`)"""
    sae: SAEConfig | None = None
    """a single run's SAE as saved, its hookpoint and model included"""
    hookpoints: list[str] | None = None
    """the hookpoints of several runs, one SAE each"""


def saved_train_config(saved: dict, source: str, **changes) -> TrainConfig:
    """The `TrainConfig` a run saved, with `changes` (the operational flags given on resume) applied."""
    # a run saved before matmul_dtype existed trained with fp32 selection; "auto" could now pick bf16
    return from_dict(TrainConfig, {**SAVED_BEFORE["train"], **saved, **changes}, source=source)


def read_saved_run(path: str | Path) -> SavedRun:
    """The configuration saved in run directory `path` (or in the parent of several hookpoints' runs)."""
    path = Path(path)
    many = (path / PARENT_FILE).is_file()
    saved = json.loads((path / PARENT_FILE).read_text()) if many else read_train_config(path)
    file = f"{path}/{PARENT_FILE if many else TRAIN_CONFIG_FILE}"
    data = from_dict(DataConfig, saved["data"], source=file)
    train = saved_train_config(saved["train"], source=file)
    harvest = from_dict(HarvestConfig, saved["harvest"])
    if many:
        options = from_dict(SAEOptions, saved["sae_options"], source=file)
        return SavedRun(
            path, saved, RunConfig(data, harvest, options, train), saved["source"], None, saved["hookpoints"]
        )
    sae = from_dict(SAEConfig, saved["sae"])
    return SavedRun(path, saved, RunConfig(data, harvest, SAEOptions.of(sae), train), saved["source"], sae)
