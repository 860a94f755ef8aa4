"""End-to-end runs: train an SAE on a model's activations into a run directory, and evaluate a run
with its SAE spliced into the model. The CLI's `train` and `eval` call these.

    sae = train_on_model("runs/demo", DataConfig(hookpoint="layers.3.resid.post"),
                         {"arch": "topk", "expansion_factor": 16, "k": 32}, TrainConfig(total_tokens=10**6))
    result = evaluate_run("runs/demo", tokens=20_000)       # also written to runs/demo/eval.json
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from monosemantic.atomic import atomic_write_json
from monosemantic.config import ConfigError, from_dict, to_dict
from monosemantic.data.cache import CachedActivations, build_cache
from monosemantic.data.corpora import CorpusShard, open_corpus
from monosemantic.data.stream import ActivationStream, HarvestConfig
from monosemantic.distributed.multi_sae import (
    PARENT_FILE,
    Exchange,
    assign,
    fit_together,
    hookpoint_worlds,
    init_batches,
)
from monosemantic.distributed.world import RankStream, ReplicaBatches, World, create_rank_sae
from monosemantic.eval.splice import SplicedEval, spliced_eval
from monosemantic.models import load_model, model_name, resolve_hookpoints
from monosemantic.plots import plot_training
from monosemantic.sae import SAE, SAEConfig, create_sae
from monosemantic.train.rundir import EVAL_FILE, TRAIN_CONFIG_FILE, check_new_run_dir, create_run_dir, read_train_config
from monosemantic.train.trainer import TrainConfig, Trainer


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


def train_on_model(
    out: str | Path,
    data: DataConfig,
    sae_options: dict,
    train: TrainConfig,
    harvest: HarvestConfig | None = None,
    *,
    progress: bool = True,
    world: World | None = None,
):
    """Train a new SAE on `data` into the run directory `out` and return it (it takes raw
    activations). When `data.hookpoint` names several hookpoints (a comma-separated list, or a glob),
    train one SAE per hookpoint from one model forward into `out/<hookpoint>/` (multi_sae.py) and
    return {hookpoint: SAE}. Under torchrun (`world`), ranks that end with no whole SAE get None."""
    world, harvest = world or World(), harvest or HarvestConfig()
    model, tokenizer = load_model(data.model, dtype=data.model_dtype, device=_device(train, world))
    hookpoints = [h.name for h in resolve_hookpoints(model, data.hookpoint.split(","))]
    if len(hookpoints) > 1:
        return _train_many(
            Path(out), hookpoints, model, tokenizer, data, sae_options, train, harvest, progress, world, resume=False
        )
    stream, source = _stream(model, tokenizer, data.hookpoint, data, train, harvest, world)
    sae_cfg = _sae_config(sae_options, stream.d, data, stream.hook.name)
    torch.manual_seed(train.seed)
    sae, shards = create_rank_sae(world, sae_cfg, train.seed)
    trainer = Trainer(sae, train, out, progress=progress, world=world, shards=shards)  # validates before writing
    start_run_dir(
        out,
        {
            "sae": to_dict(sae_cfg),
            "train": to_dict(train),
            "data": to_dict(data),
            "harvest": to_dict(harvest),
            "source": source,
        },
        world,
    )
    sae = trainer.fit(_rank_batches(stream, data, train, progress, world))
    if world.writer:
        plot_training(out)
    return sae


def resume_on_model(out: str | Path, *, progress: bool = True, world: World | None = None, **operational):
    """Continue the run in `out` (or the SAEs of several hookpoints under it) from its newest
    checkpoint, with its saved configuration (`operational` may change device, checkpoint_every,
    keep_checkpoints, log_every); returns what `train_on_model` returns."""
    out, world = Path(out), world or World()
    many = (out / PARENT_FILE).is_file()
    saved = json.loads((out / PARENT_FILE).read_text()) if many else read_train_config(out)
    data = from_dict(DataConfig, saved["data"], source=f"{out}/{PARENT_FILE if many else TRAIN_CONFIG_FILE}")
    train = dataclasses.replace(from_dict(TrainConfig, saved["train"]), **operational)
    harvest = from_dict(HarvestConfig, saved["harvest"])
    model, tokenizer = load_model(data.model, dtype=data.model_dtype, device=_device(train, world))
    if many:
        return _train_many(
            out,
            saved["hookpoints"],
            model,
            tokenizer,
            data,
            saved["sae_options"],
            train,
            harvest,
            progress,
            world,
            resume=True,
        )
    stream, source = _stream(model, tokenizer, data.hookpoint, data, train, harvest, world)
    _check_source(out, source, saved["source"])
    sae, shards = create_rank_sae(world, from_dict(SAEConfig, saved["sae"]), train.seed)
    sae = Trainer(sae, train, out, progress=progress, world=world, shards=shards).fit(
        _rank_batches(stream, data, train, progress, world), resume=True
    )
    if world.writer:
        plot_training(out)
    return sae


def _check_source(out: Path, source: dict, saved: dict) -> None:
    if source != saved:
        raise ConfigError(
            f"{out}: the model or corpus now gives activations of another shape or source ({source} vs {saved})"
        )


def _device(train: TrainConfig, world: World) -> str:
    return str(world.device) if world.distributed else train.device


def _stream(
    model,
    tokenizer,
    hookpoint: str | list[str],
    data: DataConfig,
    train: TrainConfig,
    harvest: HarvestConfig,
    world: World,
) -> tuple[ActivationStream, dict]:
    """This rank's activation stream (its corpus shard, its rows of each batch) and a description
    of the whole job's source, the same on every rank and at any world size."""
    if train.batch_size % world.data_size:
        raise ConfigError(
            f"--batch-size {train.batch_size} does not split over {world.data_size} data-parallel "
            f"ranks; choose a multiple of {world.data_size}"
        )
    corpus = open_corpus(data.corpus)
    mine = CorpusShard(corpus, world.data_rank, world.data_size) if world.data_size > 1 else corpus
    stream = ActivationStream(model, tokenizer, hookpoint, mine, train.batch_size // world.data_size, harvest)
    return stream, {**stream.describe(), "corpus": corpus.describe(), "batch_size": train.batch_size}


def _batches(stream: ActivationStream, data: DataConfig, train: TrainConfig, progress: bool, world: World):
    """The stream, or (with a cache) the cache built from it: under torchrun each data rank caches
    its own shard, in CACHE/data_rank_<r>_of_<n>."""
    if data.cache is None:
        return stream
    cache = Path(data.cache)
    if world.data_size > 1:
        cache = cache / f"data_rank_{world.data_rank}_of_{world.data_size}"
    build_cache(stream, cache, train.total_tokens // world.data_size, progress=progress and world.writer)
    return CachedActivations(cache, train.batch_size // world.data_size, seed=train.seed)


def _rank_batches(stream: ActivationStream, data: DataConfig, train: TrainConfig, progress: bool, world: World):
    """This rank's batches: its own (tagged with its data rank), read by the first rank of its
    latent group and broadcast to the others."""
    source = _batches(stream, data, train, progress, world) if world.latent_rank == 0 else None
    if source is not None and world.data_size > 1:
        source = RankStream(source, world.data_rank, world.data_size)
    return ReplicaBatches(source, world) if world.latent_size > 1 else source


def _train_many(
    out: Path,
    hookpoints: list[str],
    model,
    tokenizer,
    data: DataConfig,
    sae_options: dict,
    train: TrainConfig,
    harvest: HarvestConfig,
    progress: bool,
    world: World,
    *,
    resume: bool,
):
    """One SAE per hookpoint from one forward, spread over the ranks; see multi_sae.py."""
    if world.latent_size > 1:
        raise ConfigError(f"--shard-latents splits the SAE of one hookpoint; {len(hookpoints)} hookpoints were given")
    stream, source = _stream(model, tokenizer, hookpoints, data, train, harvest, world)
    owners = assign(len(hookpoints), world.size)
    trainers, configs = {}, {}
    for h, w in hookpoint_worlds(world, owners).items():
        sae_cfg = _sae_config(sae_options, stream.widths[h], data, hookpoints[h])
        torch.manual_seed(train.seed)
        trainers[h] = Trainer(
            create_sae(sae_cfg), train, out / hookpoints[h], progress=progress and world.writer, world=w
        )
        configs[h] = {
            "sae": to_dict(sae_cfg),
            "train": to_dict(train),
            "data": {**to_dict(data), "hookpoint": hookpoints[h]},
            "harvest": to_dict(harvest),
            "source": source,
        }
    parent = {
        "hookpoints": hookpoints,
        "data": to_dict(data),
        "harvest": to_dict(harvest),
        "train": to_dict(train),
        "sae_options": sae_options,
        "source": source,
    }
    if resume:
        _check_source(out, source, json.loads((out / PARENT_FILE).read_text())["source"])
    else:
        _start_parent(out, parent, world)
        for h, t in trainers.items():
            if t.world.writer:
                create_run_dir(t.run_dir, configs[h])
    batches = _batches(stream, data, train, progress, world)
    if world.data_size > 1:
        batches = RankStream(batches, world.data_rank, world.data_size)
    saes = fit_together(
        trainers,
        batches,
        Exchange(stream.widths, owners, world.rank, world.size),
        world,
        resume=resume,
        n_init=init_batches(stream.widths, train.batch_size),
    )
    for t in trainers.values():
        if t.world.writer:
            plot_training(t.run_dir)
    return {hookpoints[h]: sae for h, sae in saes.items()}


def _start_parent(out: Path, parent: dict, world: World) -> None:
    """`out` as the new parent of the hookpoints' run directories, holding `hookpoints.json`."""
    check_new_run_dir(out)
    world.barrier()
    if world.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / PARENT_FILE, parent)
    world.barrier()


def evaluate_run(
    run_dir: str | Path,
    *,
    tokens: int = 50_000,
    corpus: str | None = None,
    model: str | None = None,
    hookpoint: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> SplicedEval:
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
    result = spliced_eval(
        lm,
        tokenizer,
        sae,
        hookpoint,
        open_corpus(corpus),
        tokens,
        seq_len=harvest.get("seq_len", 64),
        batch_tokens=harvest.get("batch_tokens", 2048),
        progress=progress,
    )
    atomic_write_json(
        run_dir / EVAL_FILE,
        {"model": model_name(model), "hookpoint": hookpoint, "corpus": corpus, "metrics": result.to_dict()},
    )
    return result
