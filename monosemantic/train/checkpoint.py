"""Training checkpoints: everything a run needs to resume bit-for-bit, written atomically, no pickle.

    RUN_DIR/checkpoints/step_000001000/
        sae.safetensors        the SAE being trained (normalised-activation space, not folded)
        optimizer.safetensors  optimiser state tensors, keyed "<param name>.<state key>"
        trainer.safetensors    dead-latent counters and RNG states
        trainer.json           step, tokens seen, activation scale, data position, configs
        sha256.json            the sha256 of each file above, checked before a resume reads them

A checkpoint directory is built under a temporary name and renamed into place (`atomic_directory`),
so a kill at any moment leaves either the previous checkpoints or the new one, never a partial one.
A checkpoint damaged later (a flipped bit on disk) is refused by name on resume, and the previous one
offered (`--resume-from step_N`); checkpoints written before sha256.json existed are read unchecked.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from monosemantic.atomic import atomic_directory, remove_stale_temporaries
from monosemantic.errors import MonosemanticError
from monosemantic.sae.base import SAE, check_state
from monosemantic.sae.config import file_sha256
from monosemantic.train.rundir import CHECKPOINTS_DIR

# fields added after the first checkpoints were written: what a checkpoint without them trained with
SAVED_BEFORE = {"train": {"matmul_dtype": "float32"}}
OPERATIONAL_FIELDS = {"device", "checkpoint_every", "keep_checkpoints", "log_every"}  # may change on resume
_STEP_DIR = re.compile(r"^step_(\d+)$")
SHA256_FILE = "sha256.json"


class CheckpointError(MonosemanticError, ValueError):
    """A checkpoint is missing, damaged, or belongs to a different run configuration."""


@dataclass
class TrainerState:
    """What the trainer keeps besides the SAE and the optimiser."""

    step: int
    tokens_seen: int
    scale: float
    data_state: dict
    tokens_since_fired: Tensor
    rng: dict[str, Tensor] = field(default_factory=dict)
    configs: dict = field(default_factory=dict)


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and step_of(p) >= 0), key=step_of)


def save_checkpoint(
    run_dir: str | Path, sae: SAE, optimizer: torch.optim.Optimizer, state: TrainerState, keep: int
) -> Path:
    """Write checkpoint `step_<state.step>` atomically, then delete all but the newest `keep`."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    path = root / f"step_{state.step:09d}"
    opt_tensors = optimizer_tensors(optimizer, sae.named_parameters())
    trainer_tensors = {"tokens_since_fired": state.tokens_since_fired.cpu()}
    trainer_tensors.update({f"rng.{k}": v.cpu() for k, v in state.rng.items()})
    meta = {
        "step": state.step,
        "tokens_seen": state.tokens_seen,
        "scale": state.scale,
        "data_state": state.data_state,
        "configs": state.configs,
    }
    weights = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    files = {
        "sae.safetensors": lambda: safetensors.torch.save(weights),
        "optimizer.safetensors": lambda: safetensors.torch.save(opt_tensors),
        "trainer.safetensors": lambda: safetensors.torch.save(trainer_tensors),
        "trainer.json": lambda: json.dumps(meta, indent=2).encode(),
    }
    with atomic_directory(path) as tmp:
        digests = {}
        for name, content in files.items():
            data = content()  # one file's bytes in memory at a time
            (tmp / name).write_bytes(data)  # rather than save_file, which creates its files 0600
            digests[name] = hashlib.sha256(data).hexdigest()
        seal_checkpoint(tmp, digests)
    for old in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return path


def load_checkpoint(path: str | Path, sae: SAE, optimizer: torch.optim.Optimizer) -> TrainerState:
    """Restore `sae` and `optimizer` in place from checkpoint `path`; return the trainer state."""
    path = Path(path)
    verify_checkpoint(path)
    try:
        meta = json.loads((path / "trainer.json").read_text())
        weights = safetensors.torch.load_file(path / "sae.safetensors")
        opt_tensors = safetensors.torch.load_file(path / "optimizer.safetensors")
        trainer_tensors = safetensors.torch.load_file(path / "trainer.safetensors")
    except (OSError, json.JSONDecodeError, safetensors.SafetensorError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from e
    check_state(sae.state_dict(), weights, str(path / "sae.safetensors"))
    sae.load_state_dict(weights)

    load_optimizer_tensors(optimizer, sae.named_parameters(), opt_tensors, str(path))
    device = next(sae.parameters()).device
    rng = {k.removeprefix("rng."): v for k, v in trainer_tensors.items() if k.startswith("rng.")}
    return TrainerState(
        step=meta["step"],
        tokens_seen=meta["tokens_seen"],
        scale=meta["scale"],
        data_state=meta["data_state"],
        tokens_since_fired=trainer_tensors["tokens_since_fired"].to(device),
        rng=rng,
        configs=meta.get("configs", {}),
    )


def seal_checkpoint(directory: Path, known: dict[str, str] | None = None) -> None:
    """Write `directory`/sha256.json: the sha256 of every file in it (`known`: {name: sha256} of those
    the caller hashed as it wrote them)."""
    known = known or {}
    digests = {
        f.name: known.get(f.name) or file_sha256(f)
        for f in sorted(directory.iterdir())
        if f.is_file() and f.name != SHA256_FILE
    }
    (directory / SHA256_FILE).write_text(json.dumps(digests, indent=2) + "\n")


def verify_checkpoint(path: Path) -> None:
    """Refuse checkpoint `path` if a file it lists in sha256.json is missing or changed, naming the
    previous checkpoint to resume from instead (a checkpoint without sha256.json predates it)."""
    listing = path / SHA256_FILE
    if not listing.exists():
        return
    try:
        digests = json.loads(listing.read_bytes())
    except (OSError, ValueError) as e:
        raise damaged_checkpoint(path, f"{SHA256_FILE} is unreadable ({e})") from e
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise damaged_checkpoint(path, f"{SHA256_FILE} is not a {{file: sha256}} object")
    for name, digest in sorted(digests.items()):
        if not (path / name).is_file():
            raise damaged_checkpoint(path, f"{name} is missing")
        if file_sha256(path / name) != digest:
            raise damaged_checkpoint(path, f"{name} does not match its sha256 in {SHA256_FILE}")


def damaged_checkpoint(path: Path, why: str) -> CheckpointError:
    """The error for a damaged checkpoint, with the previous one of its run to resume from instead."""
    step = step_of(path)
    earlier = [p for p in checkpoint_dirs(path.parent.parent) if step_of(p) < step]
    offer = (
        f"resume from the previous checkpoint with --resume-from step_{step_of(earlier[-1])}"
        if earlier
        else "it has no earlier checkpoint; train again into a new directory"
    )
    return CheckpointError(f"{path}: damaged checkpoint: {why}; {offer}")


def step_of(path: Path) -> int:
    """The step of checkpoint directory `path` (step_000001000 -> 1000); -1 for another name."""
    m = _STEP_DIR.match(path.name)
    return int(m.group(1)) if m else -1


def optimizer_tensors(optimizer: torch.optim.Optimizer, named_parameters) -> dict[str, Tensor]:
    """The optimiser's state tensors keyed "<param name>.<state key>" (for safetensors: no pickle).
    Hyperparameters are not saved: the caller rebuilds the optimiser from its config."""
    names = {id(p): n for n, p in named_parameters}
    return {
        f"{names[id(p)]}.{key}": value.detach().cpu().contiguous()
        for p, entries in optimizer.state.items()
        for key, value in entries.items()
        if isinstance(value, Tensor)
    }


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, named_parameters, tensors: dict[str, Tensor], source: str
) -> None:
    """Inverse of `optimizer_tensors`, into an optimiser built over the same parameters."""
    params = dict(named_parameters)
    index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        name, entry = key.rsplit(".", 1)
        if name not in params:
            raise CheckpointError(f"{source}: optimizer state for unknown parameter {name!r}")
        p = params[name]
        # in the parameter's memory layout (`SAE.encoder_layout_`): fused Adam walks a parameter and
        # its moments in one flat order
        value = torch.empty_like(p, dtype=value.dtype).copy_(value) if value.shape == p.shape else value.to(p.device)
        state.setdefault(index[id(p)], {})[entry] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, after clearing the leftovers of interrupted writes."""
    remove_stale_temporaries(run_dir)
    remove_stale_temporaries(Path(run_dir) / CHECKPOINTS_DIR)
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def checkpoint_of_step(run_dir: str | Path, step: int) -> Path:
    """The complete checkpoint of `step` (of `--resume-from`, or the one several SAEs trained together
    resume at)."""
    path = Path(run_dir) / CHECKPOINTS_DIR / f"step_{step:09d}"
    if not path.is_dir():
        steps = ", ".join(f"step_{step_of(p)}" for p in checkpoint_dirs(run_dir)) or "none"
        raise CheckpointError(f"{run_dir}: no checkpoint of step {step} to resume from (it has: {steps})")
    return path


def check_same_configs(saved: dict, current: dict, source: Path) -> None:
    """Refuse to resume a checkpoint under a different configuration (operational fields aside)."""
    diffs = []
    for part in ("sae", "train"):
        a, b = {**SAVED_BEFORE.get(part, {}), **saved.get(part, {})}, current.get(part, {})
        for key in sorted(set(a) | set(b)):
            if key not in OPERATIONAL_FIELDS and a.get(key) != b.get(key):
                diffs.append(f"{part}.{key}: checkpoint has {a.get(key)!r}, now {b.get(key)!r}")
    if diffs:
        raise CheckpointError(f"{source}: cannot resume with a different configuration: " + "; ".join(diffs))
