"""End-to-end runs: train an SAE on a model's activations into a run directory, and evaluate a run
with its SAE spliced into the model. The CLI's `train` and `eval` call these.

    sae = train_on_model("runs/demo", DataConfig(hookpoint="layers.4.mlp.neurons"),
                         {"arch": "topk", "expansion_factor": 8, "k": 32}, TrainConfig(total_tokens=10**6))
    result = evaluate_run("runs/demo", tokens=20_000)       # also written to runs/demo/eval.json
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from monosemantic.atomic import atomic_write_json
from monosemantic.cache import CachedActivations, build_cache
from monosemantic.config import ConfigError, from_dict, to_dict
from monosemantic.corpora import open_corpus
from monosemantic.harvest import ActivationStream, HarvestConfig
from monosemantic.models import load_model, model_name
from monosemantic.plots import plot_training
from monosemantic.distributed import World
from monosemantic.rundir import EVAL_FILE, TRAIN_CONFIG_FILE, check_new_run_dir, create_run_dir, read_train_config
from monosemantic.sae import SAE, SAEConfig, create_sae
from monosemantic.splice import SplicedEval, spliced_eval
from monosemantic.trainer import TrainConfig, Trainer


@dataclass
class DataConfig:
    model: str = "builtin"
    """model: a local Hugging Face model directory, or 'builtin' (the shipped math LM)"""
    hookpoint: str = "layers.4.mlp.neurons"
    """where to read activations, e.g. layers.4.mlp.neurons, layers.4.resid.post, or a module path"""
    corpus: str = "mathlm"
    """text to run: mathlm, mathlm:heldout, a .txt / .jsonl file, or a saved Hugging Face dataset"""
    model_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype to run the model in"""
    cache: str | None = None
    """harvest into this activation cache first, and train from it (reused when it holds this source)"""


def default_eval_corpus(corpus: str) -> str:
    """The held-out split for the math corpus; other corpora are evaluated as given."""
    return "mathlm:heldout" if corpus.split(":")[0] == "mathlm" else corpus


def start_run_dir(out: str | Path, train_config: dict, world: World) -> None:
    """Create the new run directory `out` (on rank 0, once every rank has checked it is new)."""
    if world.distributed:
        check_new_run_dir(out)
        world.barrier()
    if world.writer:
        create_run_dir(out, train_config)


def _sae_config(options: dict, d_in: int, data: DataConfig, hookpoint: str) -> SAEConfig:
    options = dict(options)
    expansion = options.pop("expansion_factor", 32)
    d_sae = options.pop("d_sae", None) or expansion * d_in
    return SAEConfig(d_in=d_in, d_sae=d_sae, hookpoint=hookpoint, model=model_name(data.model), **options)


def train_on_model(out: str | Path, data: DataConfig, sae_options: dict, train: TrainConfig,
                   harvest: HarvestConfig | None = None, *, progress: bool = True) -> SAE:
    """Train a new SAE on `data` into the run directory `out`; return it (it takes raw activations)."""
    harvest = harvest or HarvestConfig()
    model, tokenizer = load_model(data.model, dtype=data.model_dtype, device=train.device)
    stream = ActivationStream(model, tokenizer, data.hookpoint, open_corpus(data.corpus), train.batch_size, harvest)
    sae_cfg = _sae_config(sae_options, stream.d, data, stream.hook.name)
    torch.manual_seed(train.seed)
    trainer = Trainer(create_sae(sae_cfg), train, out, progress=progress)  # validates before anything is written
    create_run_dir(out, {"sae": to_dict(sae_cfg), "train": to_dict(train), "data": to_dict(data),
                         "harvest": to_dict(harvest), "source": stream.describe()})
    sae = trainer.fit(_batches(stream, data, train, progress))
    plot_training(out)
    return sae


def resume_on_model(out: str | Path, *, progress: bool = True, **operational) -> SAE:
    """Continue the run in `out` from its newest checkpoint, with its saved configuration
    (`operational` may change device, checkpoint_every, keep_checkpoints, log_every)."""
    saved = read_train_config(out)
    data = from_dict(DataConfig, saved["data"], source=f"{out}/{TRAIN_CONFIG_FILE}")
    train = dataclasses.replace(from_dict(TrainConfig, saved["train"]), **operational)
    harvest = from_dict(HarvestConfig, saved["harvest"])
    sae_cfg = from_dict(SAEConfig, saved["sae"])
    model, tokenizer = load_model(data.model, dtype=data.model_dtype, device=train.device)
    stream = ActivationStream(model, tokenizer, data.hookpoint, open_corpus(data.corpus), train.batch_size, harvest)
    if stream.describe() != saved["source"]:
        raise ConfigError(f"{out}: the model or corpus now gives activations of another shape or source "
                          f"({stream.describe()} vs {saved['source']})")
    sae = Trainer(create_sae(sae_cfg), train, out, progress=progress).fit(
        _batches(stream, data, train, progress), resume=True)
    plot_training(out)
    return sae


def _batches(stream: ActivationStream, data: DataConfig, train: TrainConfig, progress: bool):
    if data.cache is None:
        return stream
    build_cache(stream, data.cache, train.total_tokens, progress=progress)
    return CachedActivations(data.cache, train.batch_size, seed=train.seed)


def evaluate_run(run_dir: str | Path, *, tokens: int = 50_000, corpus: str | None = None, model: str | None = None,
                 hookpoint: str | None = None, device: str = "cpu", progress: bool = True) -> SplicedEval:
    """Spliced evaluation of the run's SAE on `tokens` tokens; written to RUN_DIR/eval.json."""
    run_dir = Path(run_dir)
    sae = SAE.load(run_dir)
    saved = read_train_config(run_dir) if (run_dir / TRAIN_CONFIG_FILE).exists() else {}
    data = saved.get("data", {})
    model = model or data.get("model") or sae.cfg.model
    hookpoint = hookpoint or sae.cfg.hookpoint
    if model is None or hookpoint is None:
        raise ConfigError(f"{run_dir}: the SAE does not record its model and hookpoint; pass --model and --hookpoint")
    corpus = corpus or default_eval_corpus(data.get("corpus", "mathlm"))
    harvest = saved.get("harvest", {})
    lm, tokenizer = load_model(model, dtype=data.get("model_dtype", "float32"), device=device)
    result = spliced_eval(lm, tokenizer, sae, hookpoint, open_corpus(corpus), tokens,
                          seq_len=harvest.get("seq_len", 64), batch_tokens=harvest.get("batch_tokens", 2048),
                          progress=progress)
    atomic_write_json(run_dir / EVAL_FILE, {"model": model_name(model), "hookpoint": hookpoint, "corpus": corpus,
                                            "metrics": result.to_dict()})
    return result
