"""Training the built-in math LM: an 8-layer GPT-2-style transformer on the math corpus.

Seeded and resumable (atomic checkpoints of weights, AdamW state and step; the data stream is a pure
function of the seed, so resuming replays it to the step). Each row holds one document from position 0,
exactly as the model later reads a prompt. Writes, into OUT:

    checkpoints/step_*/    model.safetensors, optimizer.safetensors, state.json
    log.jsonl              train loss per logged step, held-out loss per evaluation
    model/                 the finished model: config.json, model.safetensors, tokenizer files,
                           train_config.json, log.jsonl, loss.png (what ships in the package)
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict
from itertools import islice
from pathlib import Path

import safetensors.torch
import torch
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from monosemantic.atomic import atomic_directory, atomic_write_json
from monosemantic.config import ConfigError
from monosemantic.data.corpora import Packed, pack
from monosemantic.mathlm.config import MathLMConfig
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.mathlm.evaluate import heldout_samples, solved
from monosemantic.mathlm.tokenizer import build_tokenizer
from monosemantic.models import greedy_complete
from monosemantic.plots import plot_curves
from monosemantic.train.checkpoint import checkpoint_dirs, load_optimizer_tensors, optimizer_tensors

log = logging.getLogger(__name__)


def build_model(cfg: MathLMConfig, vocab_size: int, tokenizer) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.seq_len,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_inner=4 * cfg.d_model,
        activation_function="gelu",
        attn_implementation="eager",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(cfg.seed)
    return GPT2LMHeadModel(config)


def lm_labels(batch: Packed) -> torch.Tensor:
    """Next-token targets: padding and each document's BOS (trivially after an EOS) are not scored."""
    labels = batch.input_ids.clone()
    labels[(batch.doc_ids < 0) | (batch.positions == 0)] = -100
    return labels


def lr_at(step: int, cfg: MathLMConfig) -> float:
    warm = max(1, int(cfg.warmup * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (cfg.min_lr + (1 - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))


def batches(cfg: MathLMConfig, tokenizer, split: str = "train"):
    """The packed stream of a split: training follows cfg.mixture, the held-out split the default mixture."""
    corpus = MathCorpus(split, seed=cfg.seed, mixture=cfg.mixture_weights() if split == "train" else None)
    return pack(corpus.documents(), tokenizer, cfg.seq_len, cfg.batch_tokens, seed=cfg.seed)


def init_weights(model, cfg: MathLMConfig) -> Path | None:
    """Load cfg.init_from's weights into `model` (a second phase of training); its directory, or None."""
    if not cfg.init_from:
        return None
    from monosemantic.mathlm import BUILTIN_MODEL_DIR

    source = BUILTIN_MODEL_DIR if cfg.init_from == "builtin" else Path(cfg.init_from)
    if not (source / "model.safetensors").is_file():
        raise ConfigError(f"--init-from {cfg.init_from}: expected a model directory with model.safetensors")
    try:
        safetensors.torch.load_model(model, str(source / "model.safetensors"))
    except RuntimeError as e:
        raise ConfigError(f"--init-from {cfg.init_from}: not a model of this recipe ({str(e).splitlines()[0]})") from e
    return source


@torch.no_grad()
def heldout_loss(model, held: list[Packed], bf16: bool) -> float:
    model.eval()
    total, count = 0.0, 0
    for b in held:
        labels = lm_labels(b)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=b.input_ids).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
        )
        total, count = total + loss.item(), count + int((labels[:, 1:] != -100).sum())
    model.train()
    return total / count


@torch.no_grad()
def quick_accuracy(model, tokenizer, samples) -> dict[str, float]:
    """Greedy answer accuracy per category on a small held-out sample (a learning curve for the log)."""
    model.eval()
    got = greedy_complete(model, tokenizer, [s.prompt for s in samples], max(len(s.completion) for s in samples) + 1)
    model.train()
    hits: dict[str, list[bool]] = {}
    for s, g in zip(samples, got):
        hits.setdefault(s.category, []).append(solved(s, g))
    return {c: round(sum(h) / len(h), 3) for c, h in sorted(hits.items())}


def make_optimizer(model, cfg: MathLMConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=True,
    )


def save_checkpoint(out: Path, model, optimizer, step: int, cfg: MathLMConfig, keep: int = 2) -> None:
    with atomic_directory(out / "checkpoints" / f"step_{step:09d}") as tmp:
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"))  # handles the tied embeddings
        safetensors.torch.save_file(
            optimizer_tensors(optimizer, model.named_parameters()), str(tmp / "optimizer.safetensors")
        )
        (tmp / "state.json").write_text(json.dumps({"step": step, "config": asdict(cfg)}))
    for old in checkpoint_dirs(out)[:-keep]:
        shutil.rmtree(old)


def restore(out: Path, model, optimizer, cfg: MathLMConfig) -> int:
    from monosemantic.train.checkpoint import latest_checkpoint

    path = latest_checkpoint(out)
    if path is None:
        return 0
    state = json.loads((path / "state.json").read_text())
    if state["config"] != asdict(cfg):
        raise ConfigError(f"{path}: saved with another configuration; train into a new directory")
    safetensors.torch.load_model(model, str(path / "model.safetensors"))
    load_optimizer_tensors(
        optimizer, model.named_parameters(), safetensors.torch.load_file(str(path / "optimizer.safetensors")), str(path)
    )
    log.info("resumed from %s", path)
    return state["step"]


def train_mathlm(cfg: MathLMConfig, out: str | Path, *, progress: bool = True) -> Path:
    """Train (or resume) in `out`; return the finished Hugging Face model directory `out/model`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_model(cfg, len(tokenizer), tokenizer)
    init_weights(model, cfg)
    optimizer = make_optimizer(model, cfg)
    step = restore(out, model, optimizer, cfg)
    held = list(islice(batches(cfg, tokenizer, "heldout"), 16))
    probe = heldout_samples(20, cfg.seed, max_documents=40_000)
    stream = islice(batches(cfg, tokenizer), step, None)  # the stream is deterministic: replay to the step
    if step == 0:
        (out / "log.jsonl").write_text("")
    else:  # drop log rows newer than the checkpoint
        rows = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines() if r.strip()]
        (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step))
    model.train()
    t0, logged, running = time.perf_counter(), step, 0.0
    with (
        open(out / "log.jsonl", "a") as logf,
        tqdm(total=cfg.steps, initial=step, unit="step", desc="mathlm", disable=not progress) as bar,
    ):
        while step < cfg.steps:
            batch = next(stream)
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, cfg)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = model(input_ids=batch.input_ids, labels=lm_labels(batch)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            running += loss.item()
            bar.update(1)
            if step % 25 == 0 or step == cfg.steps:
                row = {
                    "step": step,
                    "tokens": step * cfg.batch_tokens,
                    "train_loss": running / (step - logged),
                    "lr": optimizer.param_groups[0]["lr"],
                    "tokens_per_s": (step - logged) * cfg.batch_tokens / (time.perf_counter() - t0),
                }
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    row["heldout_loss"] = heldout_loss(model, held, cfg.bf16)
                    row["heldout_accuracy"] = quick_accuracy(model, tokenizer, probe)
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                bar.set_postfix(loss=f"{row['train_loss']:.3f}")
                t0, logged, running = time.perf_counter(), step, 0.0
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                save_checkpoint(out, model, optimizer, step, cfg)
    save_checkpoint(out, model, optimizer, step, cfg)
    return export(out, model, tokenizer, cfg)


def _read_log(path: Path) -> list[dict]:
    return [json.loads(r) for r in path.read_text().splitlines() if r.strip()] if path.is_file() else []


def training_history(cfg: MathLMConfig, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(phases, log rows) of the model this run exports: the phases of the model it started from
    (`init_from`), if any, then this run; log rows carry their phase and cumulative tokens."""
    phases: list[dict] = []
    log_rows: list[dict] = []
    if cfg.init_from:
        from monosemantic.mathlm import BUILTIN_MODEL_DIR

        source = BUILTIN_MODEL_DIR if cfg.init_from == "builtin" else Path(cfg.init_from)
        if (source / "phases.json").is_file():
            phases = json.loads((source / "phases.json").read_text())
        elif (source / "train_config.json").is_file():
            phases = [{"config": json.loads((source / "train_config.json").read_text())}]
        log_rows = [{"phase": 0, **r} for r in _read_log(source / "log.jsonl")]  # rows keep a phase they have
    offset = max((r["tokens"] for r in log_rows), default=0)
    phase = len(phases)
    phases.append({"config": asdict(cfg), "tokens": cfg.steps * cfg.batch_tokens})
    log_rows += [{**r, "phase": phase, "tokens": r["tokens"] + offset, "phase_tokens": r["tokens"]} for r in rows]
    return phases, log_rows


def export(out: Path, model, tokenizer, cfg: MathLMConfig) -> Path:
    """Write the finished model as a standard Hugging Face directory, with its recipe and curves
    (all phases of training when it continued from another model)."""
    phases, rows = training_history(cfg, _read_log(out / "log.jsonl"))
    with atomic_directory(out / "model") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "train_config.json", asdict(cfg))
        atomic_write_json(tmp / "phases.json", phases)
        (tmp / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        plot_curves(
            rows,
            "tokens",
            ["train_loss", "heldout_loss"],
            tmp / "loss.png",
            title="built-in math LM: next-token loss" + (f" ({len(phases)} phases)" if len(phases) > 1 else ""),
            ylabel="cross-entropy (nats / token)",
        )
    return out / "model"
