"""The pretrained SAEs shipped with the built-in model: one TopK SAE per layer on its residual stream
(`layers.{i}.resid.post`), all trained from one harvest, stored in bf16 in `saes/`.

    monosemantic mathlm train-saes --out runs/builtin_saes    # train (resumable), measure, export to saes/
    sae = load_pretrained("layers.3.resid.post")              # checked, upcast to float32 for compute

    saes/manifest.json            the recipe, the model's sha256 (a set made on another model is
                                  refused), and per SAE its weights' sha256, the tokens it trained on,
                                  its FVU and L0 on held-out text
    saes/layers.{i}.resid.post/   cfg.json + sae.safetensors (bf16), train_config.json, metrics.jsonl

The SAEs train in float32 and are rounded to bf16 only when exported: half the bytes (8 x 4096
latents in about 25 MB), and the upcast back to float32 on load is exact. `pretrained_run.py` turns
one of them into an analysed run directory for `monosemantic view builtin`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from monosemantic.atomic import atomic_directory, atomic_write_json
from monosemantic.config import ConfigError, to_dict
from monosemantic.data.corpora import kept_tokens, open_corpus, pack
from monosemantic.data.stream import HarvestConfig
from monosemantic.errors import MonosemanticError
from monosemantic.eval.metrics import ReconstructionStats
from monosemantic.hooks import run_and_capture
from monosemantic.models import BUILTIN, load_model, model_dir, resolve_hookpoints
from monosemantic.sae import SAE
from monosemantic.sae.config import CFG_FILE, WEIGHTS_FILE, file_sha256, read_config
from monosemantic.train.config import DataConfig, RunConfig, SAEOptions, read_saved_run
from monosemantic.train.rundir import METRICS_FILE, PARENT_FILE, TRAIN_CONFIG_FILE
from monosemantic.train.trainer import TrainConfig

PRETRAINED_DIR = Path(__file__).parent / "saes"
MANIFEST_FILE = "manifest.json"
FORMAT = "monosemantic-pretrained/1"
HOOKPOINTS = "layers.*.resid.post"
HELDOUT = "mathlm:heldout"
# trainer settings that may change when a stopped training goes on (they change no result)
OPERATIONAL = ("device", "checkpoint_every")


class PretrainedError(MonosemanticError, ValueError):
    """A pretrained SAE set that is missing, incomplete, or made on another model."""


@dataclass
class PretrainedConfig:
    """The recipe of the shipped SAEs (the trainer's other settings keep their defaults)."""

    d_sae: int = 4096
    """latents per SAE"""
    k: int = 32
    """active latents per token (TopK)"""
    tokens: int = 2_000_000
    """training tokens; every SAE sees the same ones, from one forward per batch"""
    batch_size: int = 4096
    """tokens per optimiser step"""
    lr: float | None = None
    """Adam learning rate (default: 2e-4 / sqrt(d_sae / 2^14), OpenAI's scaling)"""
    matmul_dtype: Literal["float32", "bfloat16"] = "float32"
    """dtype of the encoder matmul that picks the top k (values stay fp32)"""
    seed: int = 0
    """seed of the initialisation and of the shuffle"""
    device: str = "cpu"
    """device to run model and SAEs on: cpu, cuda, ..."""
    checkpoint_every: int = 250
    """steps between checkpoints (a stopped training goes on from the newest)"""
    heldout_tokens: int = 50_000
    """tokens of held-out text (mathlm:heldout) on which the manifest's FVU and L0 are measured"""

    def run_config(self, model: str = BUILTIN) -> RunConfig:
        """The training job: every `layers.*.resid.post` of `model` on the math corpus."""
        train = TrainConfig(
            batch_size=self.batch_size,
            total_tokens=self.tokens,
            lr=self.lr,
            matmul_dtype=self.matmul_dtype,
            seed=self.seed,
            device=self.device,
            checkpoint_every=self.checkpoint_every,
        )
        sae = SAEOptions(arch="topk", k=self.k, d_sae=self.d_sae)
        return RunConfig(DataConfig(model=model, hookpoint=HOOKPOINTS), HarvestConfig(seed=self.seed), sae, train)


def layer_hookpoint(layer: int) -> str:
    return f"layers.{layer}.resid.post"


def model_sha256(model: str) -> str:
    """sha256 of the weights file of `model` ('builtin' or a directory): what a set is tied to."""
    return file_sha256(model_dir(model) / "model.safetensors")


# ---- training and export ------------------------------------------------------------------------


def train_pretrained(out: str | Path, cfg: PretrainedConfig, *, model: str = BUILTIN, progress: bool = True):
    """Train one SAE per layer into `out/<hookpoint>/` (train_on_model with several hookpoints), or
    go on from the newest checkpoint when `out` holds that job already; returns {hookpoint: SAE}."""
    from monosemantic.train.pipeline import resume_on_model, train_on_model

    out, run = Path(out), cfg.run_config(model)
    if not (out / PARENT_FILE).is_file():
        return train_on_model(out, run, progress=progress)
    saved = read_saved_run(out)
    ours = to_dict(run)
    theirs = to_dict(saved.run)
    for name in OPERATIONAL:
        ours["train"][name] = theirs["train"][name]
    changed = sorted(
        f"{section}.{key}" for section in ours for key in ours[section] if ours[section][key] != theirs[section][key]
    )
    if changed:
        raise ConfigError(
            f"{out} holds SAEs trained with another recipe ({', '.join(changed)} differ); give the same flags "
            f"to go on with it (only --device and --checkpoint-every may change), or choose a new --out"
        )
    operational = {name: getattr(cfg, name) for name in OPERATIONAL}
    return resume_on_model(saved, progress=progress, **operational)


def export_pretrained(work: str | Path, dest: str | Path = PRETRAINED_DIR, *, heldout_tokens: int = 50_000) -> dict:
    """Round the trained SAEs in `work` (see `train_pretrained`) to bf16, measure them on held-out
    text, and write them with their manifest to `dest`, replacing it in one step; returns the manifest."""
    work = Path(work)
    saved = read_saved_run(work)
    if saved.hookpoints is None:
        raise PretrainedError(f"{work}: not a training of several hookpoints ({PARENT_FILE} is missing)")
    saes = {}
    for name in saved.hookpoints:
        if not (work / name / WEIGHTS_FILE).is_file():
            raise PretrainedError(
                f"{work / name}: not trained to the end yet; run the same `monosemantic mathlm train-saes` again"
            )
        saes[name] = SAE.load(work / name).with_dtype("bfloat16")
    model, train = saved.run.data.model, saved.run.train
    measured = heldout_metrics(
        model, {n: s.with_dtype("float32") for n, s in saes.items()}, heldout_tokens, saved.run.harvest.seq_len
    )
    manifest: dict = {
        "format": FORMAT,
        "model": model,
        "model_sha256": model_sha256(model),
        "recipe": {"arch": "topk", "sae_options": to_dict(saved.run.sae), "train": to_dict(train)},
        "saes": {},
    }
    with atomic_directory(dest) as tmp:
        for name, sae in saes.items():
            sae.save(tmp / name)
            for file in (TRAIN_CONFIG_FILE, METRICS_FILE):
                if (work / name / file).is_file():
                    shutil.copyfile(work / name / file, tmp / name / file)
            manifest["saes"][name] = {
                "sha256": read_config(tmp / name)[1],
                "d_in": sae.d_in,
                "d_sae": sae.d_sae,
                "k": sae.cfg.k,
                "dtype": sae.cfg.dtype,
                "tokens_trained": train.total_tokens // train.batch_size * train.batch_size,
                "heldout": measured[name],
            }
        atomic_write_json(tmp / MANIFEST_FILE, manifest)
    return manifest


@torch.inference_mode()
def heldout_metrics(model_spec: str, saes: dict[str, SAE], tokens: int, seq_len: int = 64) -> dict[str, dict]:
    """FVU, L0 and the fraction of latents that never fired, of each SAE ({hookpoint: SAE}) on the
    first `tokens` kept tokens of the held-out math corpus, from one forward per batch."""
    model, tokenizer = load_model(model_spec)
    hooks = resolve_hookpoints(model, list(saes))
    stats = {name: ReconstructionStats(sae.d_sae) for name, sae in saes.items()}
    n = 0
    for batch in pack(open_corpus(HELDOUT).documents(), tokenizer, seq_len, 4096):
        keep = kept_tokens(batch, tokenizer)
        acts = run_and_capture(model, batch.input_ids, hooks, batch.attention_mask)
        take = min(int(keep.sum()), tokens - n)
        for name, sae in saes.items():
            x = acts[name][keep][:take]
            z = sae.encode(x)
            stats[name].update(x, sae.decode(z), z)
        n += take
        if n >= tokens:
            break
    return {
        name: {
            "tokens": s.n,
            "fvu": s.sse / s.m2,
            "l0": s.active / s.n,
            "dead_fraction": (s.fire_counts == 0).double().mean().item(),
        }
        for name, s in stats.items()
    }


# ---- reading a set ------------------------------------------------------------------------------


def read_manifest(directory: str | Path = PRETRAINED_DIR) -> dict:
    """The manifest of the set in `directory`, checked to be one and to match the model it names."""
    file = Path(directory) / MANIFEST_FILE
    if not file.is_file():
        raise PretrainedError(
            f"no pretrained SAEs in {directory} ({MANIFEST_FILE} is missing); train them with "
            "`monosemantic mathlm train-saes --out DIR`, or train one with `make demo`"
        )
    manifest = json.loads(file.read_text())
    if manifest.get("format") != FORMAT:
        raise PretrainedError(f"{file}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    current = model_sha256(manifest["model"])
    if current != manifest["model_sha256"]:
        raise PretrainedError(
            f"the SAEs in {directory} were trained on a model whose weights have sha256 "
            f"{manifest['model_sha256'][:12]}..., but {manifest['model']} now has {current[:12]}...: they are stale; "
            "retrain them with `monosemantic mathlm train-saes --out DIR`"
        )
    return manifest


def manifest_entry(manifest: dict, hookpoint: str, directory: str | Path = PRETRAINED_DIR) -> dict:
    if hookpoint not in manifest["saes"]:
        raise PretrainedError(f"no pretrained SAE at {hookpoint} in {directory}; it has {', '.join(manifest['saes'])}")
    return manifest["saes"][hookpoint]


def load_pretrained(
    hookpoint: str, directory: str | Path = PRETRAINED_DIR, *, device: torch.device | str | None = None
) -> SAE:
    """The pretrained SAE at `hookpoint`, checked against its file's and the manifest's sha256 and
    upcast to float32 (exactly: every bf16 value is a float32 value)."""
    directory = Path(directory)
    entry = manifest_entry(read_manifest(directory), hookpoint, directory)
    if read_config(directory / hookpoint)[1] != entry["sha256"]:
        raise PretrainedError(
            f"{directory / hookpoint / CFG_FILE}: the SAE is not the one {MANIFEST_FILE} lists (sha256 differs); "
            "export the set again"
        )
    return SAE.load(directory / hookpoint, device=device).with_dtype("float32")
