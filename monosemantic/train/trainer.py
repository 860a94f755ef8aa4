"""The trainer: an SAE + any Iterator[Tensor] of activation batches -> a trained SAE.

It never sees a language model. Each step: scale the batch by one scalar (E||x|| = sqrt(d_in)),
run the SAE's own `training_forward` (fast path and loss live in the SAE), Adam, keep the decoder
rows unit norm, and count the tokens since each latent last fired. Around the step: learning-rate
warm-up and decay, sparsity-penalty warm-up, dead-latent resampling (Towards Monosemanticity),
`metrics.jsonl`, a progress bar, and atomic checkpoints that resume bit-for-bit.

Under torchrun (a `World` from `distributed.session`) the same loop runs on every rank: the SAE is
wrapped in DistributedDataParallel over the data-parallel ranks, or is one latent shard
(`distributed/sharded.py`); dead-latent counters and logged metrics are reduced over ranks, the
normalisation scalar and b_dec are estimated from every rank's first batches, checkpoints go
through torch.distributed.checkpoint, and only rank 0 writes logs, progress and the exported SAE.

    trainer = Trainer(sae, TrainConfig(total_tokens=10**7), run_dir="runs/x")
    sae_for_raw_activations = trainer.fit(batches)           # or fit(batches, resume=True)
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic.atomic import atomic_write_json
from monosemantic.config import RECORDED, ConfigError, to_dict
from monosemantic.data.activations import ActivationDataError, check_finite, check_norms
from monosemantic.distributed.sharded import ShardSpec, gather_sae
from monosemantic.distributed.world import World, broadcast_json, distributed_forward
from monosemantic.errors import MonosemanticError
from monosemantic.eval.metrics import fvu
from monosemantic.sae.base import BY_LATENT_FROM, DTYPES, SAE, TrainOutput
from monosemantic.sae.topk import TopKSAE
from monosemantic.train import checkpoint as ckpt
from monosemantic.train.data_init import init_scale_and_b_dec, resample_dead_latents
from monosemantic.train.lazy_adam import optimizer_for
from monosemantic.train.precision import resolve_matmul_dtype
from monosemantic.train.preflight import check_device
from monosemantic.train.rundir import TRAIN_CONFIG_FILE, MetricsLog
from monosemantic.train.schedule import default_lr, lr_at
from monosemantic.train.timing import StageClock, report

log = logging.getLogger(__name__)

SCALE_TOKENS = 1 << 16  # tokens used to estimate the normalisation scalar and b_dec...
SCALE_FLOATS = 1 << 24  # ...unless they would hold more floats than this (64 MB in fp32)


@runtime_checkable
class ResumableBatches(Protocol):
    """A batch source that saves and restores its position (TensorBatches, ActivationStream,
    CachedActivations): a resumed run then reads exactly the batches it would have, in O(1); any
    other iterator is fast-forwarded by the number of batches consumed."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainingError(MonosemanticError, RuntimeError):
    """Training cannot go on: non-finite data or loss, or an exhausted data source."""


DEAD_WINDOW = 10_000_000  # the longest default dead window, in tokens


@dataclass
class TrainConfig:
    batch_size: int = 4096
    """activation vectors (tokens) per optimiser step"""
    total_tokens: int = 2_000_000
    """tokens to train on; steps = total_tokens // batch_size"""
    lr: float | None = None
    """Adam learning rate (default: 2e-4 / sqrt(d_sae / 2^14), OpenAI's scaling)"""
    lr_warmup: float = 0.01
    """fraction of the steps over which the learning rate rises linearly from 0"""
    lr_decay: float = 0.2
    """fraction of the steps at the end over which the learning rate falls linearly to 0"""
    penalty_warmup: float = 0.05
    """fraction of the steps over which the sparsity penalty (relu: L1) rises linearly from 0"""
    dead_window: int = 0
    """a latent that has not fired in this many tokens is dead (AuxK, resampling, dead fraction); 0: the
    run's scale, min(10M, a quarter of total_tokens), so that every run measures it"""
    resample_every: int = 0
    """resample dead latents from high-loss inputs every this many steps (0: never)"""
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    """initial b_dec, estimated from the first batches"""
    normalize_activations: bool = True
    """scale inputs by one scalar so that E||x|| = sqrt(d_in); folded into the saved SAE"""
    matmul_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """dtype of the topk/batchtopk encoder matmul that picks the active latents (values, gradients and
    weights stay fp32); auto: bfloat16 where the device has native bf16 (AVX512-BF16/AMX CPUs, CUDA),
    else float32; the run's train_config.json records the choice and why. --matmul-dtype float32
    gives the exact fp32 selection"""
    matmul_dtype_reason: str | None = field(default=None, metadata=RECORDED)
    """why matmul_dtype is what it is (recorded when auto chose it)"""
    seed: int = 0
    """seed of the SAE initialisation and of the trainer's randomness"""
    device: str = "cpu"
    """device to train on: cpu, cuda, cuda:1, ..."""
    checkpoint_every: int = 500
    """steps between checkpoints (0: only at the end)"""
    keep_checkpoints: int = 2
    """how many of the newest checkpoints to keep"""
    log_every: int = 20
    """steps between lines of metrics.jsonl"""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.total_tokens < self.batch_size:
            raise ConfigError(f"total_tokens={self.total_tokens} is less than one batch ({self.batch_size})")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        for name in ("lr_warmup", "lr_decay", "penalty_warmup"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} is a fraction of the steps in [0, 1], got {getattr(self, name)}")
        if self.lr_warmup + self.lr_decay > 1:
            raise ConfigError(f"lr_warmup + lr_decay = {self.lr_warmup + self.lr_decay} exceeds 1")
        if self.dead_window == 0:  # 10M (Anthropic's window) is more than short runs ever see
            self.dead_window = max(1, min(DEAD_WINDOW, self.total_tokens // 4))
        for name in ("dead_window", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.resample_every < 0 or self.checkpoint_every < 0:
            raise ConfigError("resample_every and checkpoint_every must be >= 0")
        try:
            torch.device(self.device)
        except RuntimeError:
            raise ConfigError(
                f"device {self.device!r} is not a torch device; expected cpu, cuda, cuda:1, ..."
            ) from None
        if self.matmul_dtype == "auto":  # resolved now: train_config.json and resumes hold the choice
            dtype, self.matmul_dtype_reason = resolve_matmul_dtype(self.matmul_dtype, self.device)
            self.matmul_dtype = dtype  # type: ignore[assignment]

    @property
    def steps(self) -> int:
        return self.total_tokens // self.batch_size


class Trainer:
    """Trains one SAE; see the module docstring. `dense_reference=True` swaps the fast path for
    plain dense autograd (the baseline of tests and benchmarks). Under torchrun, `world` is this
    rank's place, `cfg.device` its device and, with `shards`, `sae` is this rank's latent shard."""

    def __init__(
        self,
        sae: SAE,
        cfg: TrainConfig,
        run_dir: str | Path | None = None,
        *,
        progress: bool = True,
        dense_reference: bool = False,
        world: World | None = None,
        shards: ShardSpec | None = None,
    ):
        if sae.cfg.input_norm != "none":
            raise ConfigError(
                f"cannot train an SAE with input_norm={sae.cfg.input_norm!r}: per-token input normalisation "
                "comes only with SAEs loaded from other tools; train with input_norm='none'"
            )
        self.cfg, self.world, self.shards = cfg, world or World(), shards
        self.progress = progress and self.world.writer
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = self.world.device if self.world.distributed else check_device(cfg.device)
        self.sae = sae.to(self.device).train()
        if sae.trains_by_latent and not (dense_reference or self.world.distributed):  # before Adam's state
            self.sae.encoder_layout_(by_latent=sae.d_sae >= BY_LATENT_FROM)  # no transposing copies per step
        self.steps = cfg.steps
        full_cfg = shards.cfg if shards is not None else sae.cfg
        self.lr = cfg.lr if cfg.lr is not None else default_lr(full_cfg.d_sae)
        self.optimizer = optimizer_for(self.sae, self.lr, fused=self.device.type in ("cpu", "cuda"))  # lazy_adam.py
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        # a latent shard selects in fp32: the refined bf16 pick (sae/topk.refined_topk), which equals
        # it up to fp32 ties, is not sharded
        self.matmul_dtype = DTYPES[cfg.matmul_dtype] if cfg.matmul_dtype != "float32" and shards is None else None
        self.forward = (
            (lambda x, **kw: SAE.training_forward(self.sae, x, **kw)) if dense_reference else self.sae.training_forward
        )
        if self.world.distributed:
            self.forward = distributed_forward(self.world, self.sae, self.shards, dense_reference)
        self.state = ckpt.TrainerState(
            step=0,
            tokens_seen=0,
            scale=1.0,
            data_state={},
            tokens_since_fired=torch.zeros(sae.d_sae, dtype=torch.long, device=self.device),
            configs={"sae": to_dict(full_cfg), "train": to_dict(cfg)},
        )
        self._batches_consumed = 0
        self._new = True  # a new run (not resumed): see setup
        self.clock = StageClock()  # where the time goes (timing.py)
        self.metrics = MetricsLog(self.run_dir) if self.run_dir is not None and self.world.writer else None

    # ---- the step ---------------------------------------------------------------------------

    def step(self, x: Tensor) -> TrainOutput:
        """One optimiser step on x [B, d_in] (already normalised)."""
        s, cfg = self.state, self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(s.step, self.steps, self.lr, cfg.lr_warmup, cfg.lr_decay)
        penalty = min(1.0, (s.step + 1) / (cfg.penalty_warmup * self.steps)) if cfg.penalty_warmup > 0 else 1.0
        dead = s.tokens_since_fired >= cfg.dead_window
        out = self.forward(x, dead=dead, penalty_scale=penalty, matmul_dtype=self.matmul_dtype)
        if not bool(torch.isfinite(out.loss)):
            raise TrainingError(
                f"loss became {out.loss.item()} at step {s.step} ({ {k: v.item() for k, v in out.losses.items()} }); "
                "lower --lr or check the activations"
            )
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.sae.remove_parallel_grad_()
        self.optimizer.step()
        self.sae.normalize_decoder_()
        tokens = x.shape[0] * self.world.data_size
        s.tokens_since_fired += tokens
        s.tokens_since_fired[self.world.data_any(out.fired)] = 0
        s.step += 1
        s.tokens_seen += tokens
        if cfg.resample_every and s.step % cfg.resample_every == 0 and s.step < self.steps:
            # every rank resamples from the whole global batch, with the same generator: same result
            n = resample_dead_latents(self.sae, self.optimizer, self.world.data_gather(x), dead, self.generator)
            s.tokens_since_fired[dead] = 0
            log.info("step %d: resampled %d dead latents", s.step, n)
        return out

    # ---- the loop ---------------------------------------------------------------------------

    def fit(
        self,
        batches: Iterator[Tensor],
        *,
        resume: bool = False,
        step: int | None = None,
        started: Callable[[], None] | None = None,
    ) -> SAE | None:
        """Train to `cfg.total_tokens`; return the SAE with normalisation folded in (takes raw
        activations). With a run directory, also save it there as cfg.json + sae.safetensors. A
        resume goes on from the checkpoint of `step` (default: the newest). `started` is called once
        the first batches are read and checked, before the first step."""
        batches = self.setup(iter(batches), resume=resume, step=step)
        if started is not None:
            started()
        self.start()
        try:
            while not self.done:
                self.advance(self._read(batches), batches)
        finally:
            self._bar.close()
        return self.finish(batches)

    # `fit` in parts, for a loop that feeds several trainers from one source (multi_sae.py)

    def setup(self, batches: Iterator[Tensor] | None, *, resume: bool = False, step: int | None = None):
        """Restore the checkpoint (the newest, or that of `step`) or initialise from the first
        batches, writing nothing; returns `batches`, positioned where training goes on (None stays None)."""
        self._new = not resume
        self.clock.begin()
        if resume:
            return self._restore(batches, step)
        if self.run_dir is not None and ckpt.checkpoint_dirs(self.run_dir):
            raise ckpt.CheckpointError(
                f"{self.run_dir} already holds checkpoints; resume it, or train into a new directory"
            )
        if batches is None:
            raise TrainingError("a new run initialises from its first batches; none were given")
        return self._initialise(batches)  # validates the first batches

    def start(self) -> None:
        """Begin the steps: the run directory (with train_config.json, unless the caller made it)
        and the progress bar."""
        run_dir = self.run_dir if self._new and self.world.writer else None
        if run_dir is not None and not (run_dir / TRAIN_CONFIG_FILE).exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir / TRAIN_CONFIG_FILE, self.state.configs)
        self._start, self._t0 = self.state.step, time.perf_counter()
        self._bar = tqdm(
            total=self.steps,
            initial=self._start,
            unit="step",
            desc=f"train {self.sae.cfg.arch}",
            disable=not self.progress,
            dynamic_ncols=True,
        )

    @property
    def done(self) -> bool:
        return self.state.step >= self.steps

    def advance(self, batch: Tensor, batches) -> None:
        """One step on `batch` (raw activations), then log and checkpoint as due; `batches` is the
        source whose position a checkpoint records."""
        x = self._prepare(batch)
        with self.clock("sae_step"):
            out = self.step(x)
        if self.done:  # re-estimate from the final weights what inference needs (every data-parallel
            self.sae.calibrate_(self.world.data_gather(x))  # rank on the same, global, batch)
        self._bar.update(1)
        if self.state.step % self.cfg.log_every == 0 or self.state.step == self.steps:
            with self.clock("logging"):
                self._log_row(x, out)
        every = self.cfg.checkpoint_every
        if self.run_dir is not None and every and self.state.step % every == 0 and self.state.step < self.steps:
            with self.clock("checkpoint"):
                self.save_checkpoint(batches)

    def finish(self, batches) -> SAE | None:
        """The last checkpoint and the exported SAE (see `export`); logs where the time went."""
        self._bar.close()
        if self.run_dir is not None:
            with self.clock("checkpoint"):
                self.save_checkpoint(batches)
        sae = self.export()
        if self.world.writer and self.state.step > self._start:  # a finished run resumed: nothing to add
            tokens = (self.state.step - self._start) * self.cfg.batch_size * self.world.data_size
            report(self.clock.breakdown(tokens), self.run_dir)
        return sae

    def _read(self, batches: Iterator[Tensor]) -> Tensor:
        try:
            with self.clock("harvest"):
                x = next(batches)
        except StopIteration:
            raise TrainingError(
                f"the data ran out after {self._batches_consumed} batches, at step {self.state.step} of "
                f"{self.steps}; provide more data or lower total_tokens"
            ) from None
        self._batches_consumed += 1
        return x

    def _prepare(self, x: Tensor) -> Tensor:
        self._check_batch(x, f"batch at step {self.state.step}")
        if self.world.data_size > 1 and x.shape[0] * self.world.data_size != self.cfg.batch_size:
            raise ActivationDataError(
                f"batch at step {self.state.step} has {x.shape[0]} rows; each of the "
                f"{self.world.data_size} data-parallel ranks expects batch_size / "
                f"{self.world.data_size} = {self.cfg.batch_size // self.world.data_size}"
            )
        return x.to(self.device, self.sae.W_enc.dtype, non_blocking=True) * self.state.scale

    def _check_batch(self, x: Tensor, where: str) -> None:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.sae.batch_width:
            shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ActivationDataError(f"{where} has shape {shape}; expected [batch, {self.sae.batch_width}]")
        check_finite(x, where)
        check_norms(x, where)

    def _log_row(self, x: Tensor, out: TrainOutput) -> None:
        """A line of metrics.jsonl and the progress bar's figures."""
        s = self.state
        tokens_per_s = (s.step - self._start) * self.cfg.batch_size / (time.perf_counter() - self._t0)
        if self.world.distributed:
            measured = self.world.batch_metrics(self.sae.target(x), out)
        else:
            measured = {
                "loss": out.loss.item(),
                **{k: v.item() for k, v in out.losses.items()},
                "fvu": fvu(self.sae.target(x), out.x_hat).item(),
                "l0": out.l0.item(),
            }
        row = {
            "step": s.step,
            "tokens": s.tokens_seen,
            "lr": self.optimizer.param_groups[0]["lr"],
            **measured,
            # measurable only once the window has passed: before that no latent can be dead
            "dead_fraction": self.world.dead_fraction(s.tokens_since_fired, self.cfg.dead_window)
            if s.tokens_seen >= self.cfg.dead_window
            else None,
            "dead_window": self.cfg.dead_window,
            "tokens_per_s": round(tokens_per_s, 1),
        }
        if self.metrics is not None:
            self.metrics.append(row)
        dead = row["dead_fraction"]
        self._bar.set_postfix(
            fvu=f"{row['fvu']:.3f}", l0=f"{row['l0']:.1f}", dead="n/a" if dead is None else f"{dead:.1%}"
        )

    # ---- start, checkpoint, resume, export --------------------------------------------------

    def _initialise(self, batches: Iterator[Tensor]) -> Iterator[Tensor]:
        """Estimate the normalisation scalar and b_dec from the first batches without losing them."""
        saved = batches.state_dict() if isinstance(batches, ResumableBatches) else None
        tokens = min(SCALE_TOKENS, SCALE_FLOATS // self.sae.batch_width)
        n_batches = max(1, -(-tokens // self.cfg.batch_size))
        with self.clock("harvest"):
            peeked = list(islice(batches, n_batches))
        if not peeked:
            raise TrainingError("the data source yielded no batches")
        for i, b in enumerate(peeked):
            self._check_batch(b, f"batch {i} (read to initialise)")
        sample = torch.cat(peeked).to(self.device, torch.float32)
        if self.world.data_size > 1:  # the global batches, in order: rank r holds rows [r * b, (r + 1) * b) of each
            by_rank = sample.view(len(peeked), -1, self.sae.batch_width).transpose(0, 1)  # [b, n_batches, d_in]
            sample = self.world.data_gather(by_rank).transpose(0, 1).reshape(-1, self.sae.batch_width)
        self.state.scale = init_scale_and_b_dec(self.sae, sample, self.cfg.normalize_activations, self.cfg.b_dec_init)
        if isinstance(batches, ResumableBatches) and saved is not None:
            batches.load_state_dict(saved)
            return batches
        return chain(peeked, batches)  # a fresh source replays them, so resume skips them by count

    def save_checkpoint(self, batches: Iterator[Tensor]) -> Path:
        s = self.state
        s.data_state = (
            batches.state_dict()
            if isinstance(batches, ResumableBatches)
            else {"batches_consumed": self._batches_consumed}
        )
        s.rng = {"torch": torch.get_rng_state(), "trainer": self.generator.get_state()}
        if self.world.distributed:  # training draws nothing from the CUDA generators; they differ per rank
            from monosemantic.distributed.checkpoint import save_distributed_checkpoint

            path = save_distributed_checkpoint(
                self._checkpoint_dir(), self.sae, self.optimizer, s, self.cfg.keep_checkpoints, self.world
            )
        else:
            if torch.cuda.is_available():
                s.rng.update({f"cuda{i}": t for i, t in enumerate(torch.cuda.get_rng_state_all())})
            path = ckpt.save_checkpoint(self._checkpoint_dir(), self.sae, self.optimizer, s, self.cfg.keep_checkpoints)
        if self.metrics is not None:
            self.metrics.flush()
        return path

    def _restore(self, batches: Iterator[Tensor] | None, step: int | None = None) -> Iterator[Tensor] | None:
        if self.run_dir is None:
            raise ConfigError("resume needs a run directory")
        path = self._checkpoint_path(step)
        if self.world.distributed or not (path / "sae.safetensors").exists():
            from monosemantic.distributed.checkpoint import load_any_checkpoint

            state = load_any_checkpoint(path, self.sae, self.optimizer, self.world)
        else:
            state = ckpt.load_checkpoint(path, self.sae, self.optimizer)
        ckpt.check_same_configs(state.configs, self.state.configs, path)
        state.configs = self.state.configs
        self.state = state
        torch.set_rng_state(state.rng["torch"])
        self.generator.set_state(state.rng["trainer"].to(self.generator.get_state().device))
        for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
            if f"cuda{i}" in state.rng:
                torch.cuda.set_rng_state(state.rng[f"cuda{i}"], i)
        if self.metrics is not None:
            self.metrics.truncate_after(state.step)
        log.info("resumed from %s (step %d)", path, state.step)
        if batches is None:
            return None
        if isinstance(batches, ResumableBatches) and "batches_consumed" not in state.data_state:
            batches.load_state_dict(state.data_state)
            return batches
        skip = state.data_state.get("batches_consumed", 0)
        self._batches_consumed = skip
        return islice(batches, skip, None)

    def _checkpoint_dir(self) -> Path:
        if self.run_dir is None:
            raise ConfigError("checkpoints live in a run directory; give the Trainer one (run_dir=...)")
        return self.run_dir

    def _checkpoint_path(self, step: int | None) -> Path:
        """The checkpoint of `step`, or the newest; under torchrun rank 0 looks (and clears the
        leftovers of interrupted writes) for all."""
        path = ckpt.latest_checkpoint(self._checkpoint_dir()) if self.world.writer else None
        path = broadcast_json(str(path) if path is not None else None, self.world)
        if path is None:
            raise ckpt.CheckpointError(f"{self.run_dir}: no checkpoint to resume from")
        return Path(path) if step is None else ckpt.checkpoint_of_step(self._checkpoint_dir(), step)

    def export(self) -> SAE | None:
        """A copy of the SAE, on the CPU and in eval mode, that takes raw activations (of a
        latent-sharded SAE: the full SAE on the first rank of the first latent group, None on the
        other ranks)."""
        if self.shards is not None and self.world.data_rank != 0:
            return None  # the first data-parallel replica's shards make the SAE
        sae: SAE | None
        if self.shards is not None:
            if not isinstance(self.sae, TopKSAE):
                raise TrainingError(f"latent sharding splits TopK SAEs; this trainer holds a {self.sae.cfg.arch!r} SAE")
            sae = gather_sae(self.sae, self.shards)
        else:
            sae = copy.deepcopy(self.sae)
        if sae is None:
            return None
        sae = sae.cpu().eval()
        sae._workspace = {}
        sae.encoder_layout_(by_latent=False)
        sae.fold_input_scale_(self.state.scale)
        if self.run_dir is not None and self.world.writer:
            sae.save(self.run_dir)
        return sae
