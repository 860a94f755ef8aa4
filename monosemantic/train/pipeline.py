"""Training end to end: a `RunConfig` (config.py) -> activations -> trainer -> run directory. The
CLI's `train`, `train-tensors`, `sweep` and `--resume` all go through here.

    run = RunConfig(DataConfig(hookpoint="layers.3.resid.post"), HarvestConfig(),
                    SAEOptions(arch="topk", expansion_factor=16, k=32), TrainConfig(total_tokens=10**6))
    sae = train_on_model("runs/demo", run)
    sae = resume_on_model("runs/demo")                      # after a crash: from its newest checkpoint

Every job, one SAE or several, ends in `train_saes`: check the device and its memory, build each SAE
and its trainer, read and check the first batches (everything that can refuse the input does so
here), only then create the run directories (locked while the job writes them), train, plot. Under
torchrun each rank runs the same code on its own `World`; see distributed/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from monosemantic.config import ConfigError, to_dict
from monosemantic.data.activations import TensorBatches
from monosemantic.data.cache import CachedActivations, build_cache
from monosemantic.data.corpora import CorpusShard, open_corpus
from monosemantic.data.stream import ActivationStream
from monosemantic.distributed.multi_sae import (
    Exchange,
    assign,
    fit_together,
    hookpoint_worlds,
    init_batches,
)
from monosemantic.distributed.world import (
    RankRows,
    RankStream,
    ReplicaBatches,
    World,
    all_gather_json,
    create_rank_sae,
)
from monosemantic.models import Hookpoint, load_model, model_name
from monosemantic.plots import plot_training
from monosemantic.sae import SAE, SAEConfig
from monosemantic.train.config import RunConfig, SavedRun, read_saved_run
from monosemantic.train.preflight import check_device, check_memory
from monosemantic.train.rundir import (
    METRICS_FILE,
    PARENT_FILE,
    TRAIN_CONFIG_FILE,
    check_new_run_dir,
    create_run_dir,
    is_unstarted,
    locked_run_dir,
)
from monosemantic.train.trainer import TrainConfig, Trainer
from monosemantic.train.units import Unit, dictionary_units, flat_hooks, unit_widths

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class Job:
    """Where a training job on a model runs: its output directory, the model, this process's place
    among the ranks."""

    out: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    world: World
    progress: bool = True

    @classmethod
    def open(cls, out: str | Path, run: RunConfig, world: World | None, progress: bool) -> Job:
        """Load the job's model, on this rank's device under torchrun."""
        world = world or World()
        device = str(world.device) if world.distributed else str(check_device(run.train.device))
        model, tokenizer = load_model(run.data.model, dtype=run.data.model_dtype, device=device)
        return cls(Path(out), model, tokenizer, world, progress)


@dataclass
class NewSAE:
    """One SAE of a job, before it is built: its config, its run directory, the ranks that train it."""

    cfg: SAEConfig
    run_dir: Path
    world: World
    progress: bool = True
    record: dict | None = None
    """its train_config.json (for a new run; a resumed one has it already)"""


def train_on_model(
    out: str | Path, run: RunConfig, *, progress: bool = True, world: World | None = None
) -> SAE | dict[str, SAE | None] | None:
    """Train a new SAE on `run.data` into the run directory `out` and return it (it takes raw
    activations). When `run.data.hookpoint` names several hookpoints (a comma-separated list, or a
    glob), train one SAE per hookpoint from one model forward into `out/<hookpoint>/` (multi_sae.py)
    and return {hookpoint: SAE}. Under torchrun (`world`), ranks that end with no whole SAE get None.
    A transcoder arch reads MLPs (`layers.*.mlp`: each one's mlp.in -> mlp.out; train/units.py)."""
    check_new_run_dir(out)  # before the model loads; again, under the lock, when it is created
    job = Job.open(out, run, world, progress)
    units = dictionary_units(job.model, run.data.hookpoint, run.sae.arch)  # the only resolution of this job
    if len(units) > 1:
        return _train_many(job, run, units)
    stream, source = activation_stream(job, run, flat_hooks(units))
    cfg = unit_config(run, units[0], unit_widths(units, stream.widths)[0])
    new = NewSAE(cfg, job.out, job.world, progress, run.record(cfg, source))
    with harvesting(stream, run.train):
        return train_saes({0: new}, run.train, lambda: training_batches(job, stream, run), job.world)[0]


def resume_on_model(
    saved: SavedRun | str | Path,
    *,
    progress: bool = True,
    world: World | None = None,
    step: int | None = None,
    **operational: Any,
) -> SAE | dict[str, SAE | None] | None:
    """Continue a run (or the SAEs of several hookpoints under one parent) from its newest checkpoint
    (or that of `step`), with its saved configuration (`read_saved_run`; `operational` may change
    device, checkpoint_every, keep_checkpoints, log_every); returns what `train_on_model` returns."""
    saved = saved if isinstance(saved, SavedRun) else read_saved_run(saved)
    run = dataclasses.replace(saved.run, train=dataclasses.replace(saved.run.train, **operational))
    job = Job.open(saved.path, run, world, progress)
    if saved.hookpoints is not None:
        units = dictionary_units(job.model, saved.hookpoints, run.sae.arch)
        return _train_many(job, run, units, saved_source=saved.source, step=step)
    assert saved.sae is not None  # a single run records its SAE
    stream, source = activation_stream(
        job, run, flat_hooks(dictionary_units(job.model, run.data.hookpoint, run.sae.arch))
    )
    check_source(job.out, source, saved.source)
    new = NewSAE(saved.sae, job.out, job.world, progress)
    batches = lambda: training_batches(job, stream, run)
    with harvesting(stream, run.train):
        return train_saes({0: new}, run.train, batches, job.world, resume=True, step=step)[0]


def train_on_tensors(
    out: str | Path,
    acts: Tensor,
    sae: SAEConfig,
    train: TrainConfig,
    data: dict,
    *,
    resume: bool = False,
    step: int | None = None,
    progress: bool = True,
    world: World | None = None,
) -> SAE | None:
    """Train the SAE `sae` on the rows of `acts` [N, d_in] into the new run directory `out` (`data`:
    how its train_config.json describes them), or continue that run (`resume`, from the checkpoint of
    `step` or the newest). Under torchrun every rank reads the same global batches and trains on its
    rows of each."""
    world = world or World()
    if not resume:
        check_new_run_dir(out)
    batches: Any = TensorBatches(acts, train.batch_size, seed=train.seed)
    if world.distributed:
        batches = RankRows(batches, world.data_rank, world.data_size)
    record = {"sae": to_dict(sae), "train": to_dict(train), "data": data}
    new = NewSAE(sae, Path(out), world, progress, record)
    return train_saes({0: new}, train, lambda: batches, world, resume=resume, step=step)[0]


def unit_config(run: RunConfig, unit: Unit, dims: tuple[int, int | None]) -> SAEConfig:
    """The SAE (or transcoder) of one unit of the job, its input (and output) width `dims`."""
    d_in, d_out = dims
    out = unit.out.name if unit.out is not None else None
    return run.sae.sae_config(
        d_in, hookpoint=unit.inp.name, model=model_name(run.data.model), d_out=d_out, output_hookpoint=out
    )


def _train_many(job: Job, run: RunConfig, units: list[Unit], saved_source: dict | None = None, step: int | None = None):
    """One SAE per hookpoint (or transcoder per MLP) from one forward, spread over the ranks
    (multi_sae.py); continues the job whose activations `saved_source` describes, when given (from
    the checkpoints of `step`, or the newest that all have)."""
    world, names = job.world, [u.name for u in units]
    if world.latent_size > 1:
        raise ConfigError(f"--shard-latents splits the SAE of one hookpoint; {len(units)} hookpoints were given")
    stream, source = activation_stream(job, run, flat_hooks(units))
    if saved_source is not None:
        check_source(job.out, source, saved_source)
    dims = unit_widths(units, stream.widths)
    widths = [d_in + (d_out or 0) for d_in, d_out in dims]  # each unit's columns of a batch
    owners = assign(len(units), world.size)
    saes = {}
    for h, w in hookpoint_worlds(world, owners).items():
        cfg = unit_config(run, units[h], dims[h])
        record = run.record(cfg, source, hookpoint=names[h])
        saes[h] = NewSAE(cfg, job.out / names[h], w, job.progress and world.writer, record)
    with harvesting(stream, run.train):
        done = train_saes(
            saes,
            run.train,
            lambda: training_batches(job, stream, run),
            world,
            resume=saved_source is not None,
            step=step,
            parent=(job.out / PARENT_FILE, run.parent_record(names, source)),
            split=Exchange(widths, owners, world.rank, world.size),
            n_init=init_batches(widths, run.train.batch_size),
        )
    return {names[h]: sae for h, sae in done.items()}


def train_saes(
    saes: dict[int, NewSAE],
    train: TrainConfig,
    batches: Callable[[], Iterator[Tensor]],
    world: World,
    *,
    resume: bool = False,
    step: int | None = None,
    parent: tuple[Path, dict] | None = None,
    split: Callable[[Tensor], dict[int, Tensor]] | None = None,
    n_init: int = 1,
) -> dict[int, SAE | None]:
    """Check the device and its memory, build each SAE (this rank's part of it: whole, or its latent
    shard) as a solo run of it would be initialised, and its trainer, read and check the first
    batches; then, nothing being left to refuse the input, create the run directories (under a new
    `parent` (file, content), if given), train, and plot each run. One SAE trains alone on
    `batches()`; several train in lockstep (`multi_sae.fit_together`), each on its part (`split`)
    of every batch. With `resume`, the run directories exist and training continues from their
    checkpoints, or from step 0 if none has one. Each run directory (and the parent) stays locked
    (`rundir.locked_run_dir`) while this trains."""
    device = world.device if world.distributed else check_device(train.device)
    configs = [new.cfg for new in saes.values()]
    check_memory(configs, train.batch_size // world.data_size, device, world.latent_size, train.matmul_dtype)
    with contextlib.ExitStack() as held:
        restart = False  # a resumed job killed before its first checkpoint starts again from step 0
        if resume:
            _lock_existing(saes, parent, world, held)
            restart = _all_unstarted(saes, world)
        trainers = {}
        for key, new in saes.items():
            torch.manual_seed(train.seed)
            sae, shards = create_rank_sae(new.world, new.cfg, train.seed)
            trainers[key] = Trainer(sae, train, new.run_dir, progress=new.progress, world=new.world, shards=shards)

        def started() -> None:
            if parent is not None and not restart:
                start_parent(*parent, world, held)
            for new in saes.values():
                if restart and (new.run_dir / TRAIN_CONFIG_FILE).is_file():
                    if new.world.writer:  # drop the rows of the killed start
                        (new.run_dir / METRICS_FILE).unlink(missing_ok=True)
                        log.info("%s: no checkpoint to resume from; training from step 0", new.run_dir)
                else:
                    assert new.record is not None, "a new run records its configuration"
                    start_run_dir(new.run_dir, new.record, new.world, held)

        go_on = resume and not restart
        if split is None:
            [(key, trainer)] = trainers.items()
            done = {key: trainer.fit(batches(), resume=go_on, step=step, started=None if go_on else started)}
        else:
            done = fit_together(
                trainers,
                batches(),
                split,
                world,
                resume=go_on,
                step=step,
                n_init=n_init,
                started=None if go_on else started,
            )
        for key, new in saes.items():
            if trainers[key].world.writer:
                plot_training(new.run_dir)
    return done


def _lock_existing(
    saes: dict[int, NewSAE], parent: tuple[Path, dict] | None, world: World, held: contextlib.ExitStack
) -> None:
    """Lock the run directories (and their parent) that a resumed job writes, on their writer ranks
    (one that a kill kept from being made is made, and locked, when training starts)."""
    if parent is not None and world.rank == 0:
        held.enter_context(locked_run_dir(parent[0].parent))
    for new in saes.values():
        if new.world.writer and new.run_dir.is_dir():
            held.enter_context(locked_run_dir(new.run_dir))


def _all_unstarted(saes: dict[int, NewSAE], world: World) -> bool:
    """Whether every run directory of the job (on any rank) is unstarted (`rundir.is_unstarted`)."""
    found = all(not new.run_dir.exists() or is_unstarted(new.run_dir) for new in saes.values())
    return all(all_gather_json(found, world.group)) if world.distributed else found


def start_run_dir(out: Path, train_config: dict, world: World, held: contextlib.ExitStack) -> None:
    """Create the new run directory `out` (on its writer rank, once every rank has checked it is
    new), locked until `held` closes."""
    if world.distributed:
        check_new_run_dir(out)
        world.barrier()
    if world.writer:
        create_run_dir(out, train_config, held)


def start_parent(file: Path, content: dict, world: World, held: contextlib.ExitStack) -> None:
    """`file.parent` as the new parent of several run directories, holding `file` (its `content`)."""
    check_new_run_dir(file.parent)
    world.barrier()
    if world.rank == 0:
        create_run_dir(file.parent, content, held, file=file.name)
    world.barrier()


def check_source(out: Path, source: dict, saved: dict) -> None:
    if source != saved:
        raise ConfigError(
            f"{out}: the model or corpus now gives activations of another shape or source ({source} vs {saved})"
        )


def activation_stream(job: Job, run: RunConfig, hookpoints: str | list[Hookpoint]) -> tuple[ActivationStream, dict]:
    """This rank's activation stream (its corpus shard, its rows of each batch) and a description
    of the whole job's source, the same on every rank and at any world size."""
    world, train = job.world, run.train
    if train.batch_size % world.data_size:
        raise ConfigError(
            f"--batch-size {train.batch_size} does not split over {world.data_size} data-parallel "
            f"ranks; choose a multiple of {world.data_size}"
        )
    corpus = open_corpus(run.data.corpus)
    mine = CorpusShard(corpus, world.data_rank, world.data_size) if world.data_size > 1 else corpus
    stream = ActivationStream(
        job.model, job.tokenizer, hookpoints, mine, train.batch_size // world.data_size, run.harvest
    )
    return stream, {**stream.describe(), "corpus": corpus.describe(), "batch_size": train.batch_size}


@contextlib.contextmanager
def harvesting(stream: ActivationStream, train: TrainConfig) -> Iterator[None]:
    """The stream harvests its next chunk in a thread while the SAE trains on this one (only the
    stream runs the job's model), up to the last chunk `train`'s steps read (so a run harvests what it
    trains on and no more); the thread stops when the block ends. Meanwhile a thread waiting
    for the GIL gets it after 0.5 ms instead of 5: the harvest (mostly Python) holds it, and the
    SAE step, many short torch ops, needs it back after each (on 2 cores, 5 ms made the step ~1.5x
    slower and ate the overlap's gain)."""
    stream.look_ahead = True
    steps = train.total_tokens // train.batch_size
    stream.ahead_until = -(-steps * stream.batch_size // stream.chunk_tokens)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, GIL_SWITCH_S))
    try:
        yield
    finally:
        stream.stop_ahead()
        stream.look_ahead, stream.ahead_until = False, None
        sys.setswitchinterval(interval)


GIL_SWITCH_S = 0.0005


def training_batches(job: Job, stream: ActivationStream, run: RunConfig):
    """This rank's batches: the stream, or (with a cache) the cache built from it, tagged with its
    data rank; read by the first rank of its latent group and broadcast to the others."""
    world = job.world
    source = _stream_or_cache(job, stream, run) if world.latent_rank == 0 else None
    if source is not None and world.data_size > 1:
        source = RankStream(source, world.data_rank, world.data_size)
    return ReplicaBatches(source, world) if world.latent_size > 1 else source


def _stream_or_cache(job: Job, stream: ActivationStream, run: RunConfig):
    """Under torchrun each data rank caches its own shard, in CACHE/data_rank_<r>_of_<n>."""
    if run.data.cache is None:
        return stream
    world, train = job.world, run.train
    cache = Path(run.data.cache)
    if world.data_size > 1:
        cache = cache / f"data_rank_{world.data_rank}_of_{world.data_size}"
    build_cache(stream, cache, train.total_tokens // world.data_size, progress=job.progress and world.writer)
    return CachedActivations(cache, train.batch_size // world.data_size, seed=train.seed)
