"""Model-level evaluation of an SAE: its reconstruction spliced into the model at its hookpoint.

Over the next-token predictions of N tokens (padding and BOS targets excluded), with the activation
at the hookpoint replaced on every kept token (not BOS, not padding: what the SAE was trained on):

- CE_clean: the model as it is; CE_spliced: activation -> SAE reconstruction;
- CE_zero: activation -> 0; CE_mean: activation -> its mean over the evaluation tokens;
- CE loss recovered = (CE_ablated - CE_spliced) / (CE_ablated - CE_clean), for both ablations;
- KL = KL(clean || spliced) of the next-token distributions, averaged over tokens (also for the
  ablations, as a scale);
plus the SAE-level metrics (FVU, L0, ...) on the same activations.

`evaluate_run` does this for a run directory (its model, hookpoint and corpus, as it trained) and
writes RUN_DIR/eval.json; `monosemantic eval RUN_DIR` calls it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic.atomic import atomic_write_json
from monosemantic.config import ConfigError
from monosemantic.data.corpora import Corpus, Packed, kept_tokens, open_corpus, pack
from monosemantic.eval.metrics import ReconstructionStats, dense_fraction, density_histogram
from monosemantic.formats import load_sae
from monosemantic.hooks import capture, patch
from monosemantic.models import ModelError, load_model, model_name, resolve_hookpoints
from monosemantic.train.rundir import EVAL_FILE, TRAIN_CONFIG_FILE, read_train_config


@dataclass
class SplicedEval:
    """Model-level metrics of one SAE at its hookpoint (see the module docstring)."""

    n_tokens: int
    ce_clean: float
    ce_spliced: float
    ce_zero_ablated: float
    ce_mean_ablated: float
    ce_loss_recovered: float
    """with zero ablation as the baseline"""
    ce_loss_recovered_mean_ablation: float
    kl_spliced: float
    kl_zero_ablated: float
    kl_mean_ablated: float
    fvu: float
    explained_variance: float
    normalized_mse: float
    l0: float
    dead_fraction: float
    """latents that never fired on these n_tokens tokens"""
    dense_fraction: float
    density_histogram: dict

    def to_dict(self) -> dict:
        return asdict(self)


def ce_kl_sums(logits: Tensor, clean_logp: Tensor, targets: Tensor, scored: Tensor) -> tuple[float, float]:
    """Summed CE of `targets` and summed KL(clean || this) over the `scored` positions."""
    logp = F.log_softmax(logits.float(), dim=-1)
    ce = -logp.gather(-1, targets[..., None])[..., 0]
    kl = (clean_logp.exp() * (clean_logp - logp)).sum(-1)
    return ce[scored].sum().item(), kl[scored].sum().item()


def _replace_on(keep: Tensor, value_fn):
    """A patch function replacing the activation on kept positions only (BOS, padding untouched)."""

    def edit(x: Tensor) -> Tensor:
        return torch.where(keep[..., None], value_fn(x).to(x.dtype), x)

    return edit


@torch.no_grad()
def spliced_eval(
    model,
    tokenizer,
    sae,
    hookpoint: str,
    corpus: Corpus,
    tokens: int,
    *,
    seq_len: int = 64,
    batch_tokens: int = 2048,
    progress: bool = True,
) -> SplicedEval:
    [hook] = resolve_hookpoints(model, hookpoint)
    device = next(model.parameters()).device
    sae = sae.to(device).eval()
    batches = eval_batches(corpus, tokenizer, seq_len, batch_tokens, tokens)
    mean = _mean_activation(model, hook.name, batches, tokenizer, device)
    if mean.shape[-1] != sae.d_in:
        raise ModelError(f"hookpoint {hook.name!r} has width {mean.shape[-1]}, but the SAE expects d_in={sae.d_in}")
    totals = dict.fromkeys(["clean", "spliced", "zero", "mean", "kl_spliced", "kl_zero", "kl_mean"], 0.0)
    n_scored = 0
    stats = ReconstructionStats(sae.d_sae)
    for batch in tqdm(batches, desc="spliced eval", unit="batch", disable=not progress):
        ids, keep = batch.input_ids.to(device), kept_tokens(batch, tokenizer).to(device)
        mask = batch.attention_mask.to(device)
        targets, scored = ids[:, 1:], keep[:, 1:]  # predict each kept token from the one before it
        with capture(model, hook.name) as acts:
            clean = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        clean_logp = F.log_softmax(clean.float(), dim=-1)
        x = acts[hook.name]
        x_kept = x[keep].float()
        x_hat = torch.cat([_reconstruct(sae, part, stats) for part in x_kept.split(latent_rows(sae.d_sae))])
        spliced = x.clone()
        spliced[keep] = x_hat.to(x.dtype)
        ce, _ = ce_kl_sums(clean, clean_logp, targets, scored)
        totals["clean"] += ce
        variants = {
            "spliced": lambda a: spliced,  # noqa: B023 (called within this iteration)
            "zero": torch.zeros_like,
            "mean": lambda a: mean.to(a.dtype).expand_as(a),
        }
        for name, fn in variants.items():
            with patch(model, {hook.name: _replace_on(keep, fn)}):
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            ce, kl = ce_kl_sums(logits, clean_logp, targets, scored)
            totals[name] += ce
            totals[f"kl_{name}"] += kl
        n_scored += int(scored.sum())
    return _result(totals, n_scored, stats)


LATENT_BUDGET = 2**25
"""latent values held at once ([rows, d_sae] float32: 128 MB), so that a wide SAE (a routed one of
1M latents) is evaluated a few dozen tokens at a time instead of asking for 16 GB per batch"""


def latent_rows(d_sae: int) -> int:
    """Tokens whose [rows, d_sae] latents fit `LATENT_BUDGET` (a whole batch below ~8k latents)."""
    return max(1, LATENT_BUDGET // d_sae)


def _reconstruct(sae, x: Tensor, stats: ReconstructionStats) -> Tensor:
    z = sae.encode(x)
    x_hat = sae.decode(z, x)  # x: SAEs with a per-token input_norm restore its scale
    stats.update(x, x_hat, z)
    return x_hat


def eval_batches(corpus: Corpus, tokenizer, seq_len: int, batch_tokens: int, tokens: int) -> list[Packed]:
    """Batches holding about `tokens` kept tokens."""
    out, have = [], 0
    for batch in pack(corpus.documents(), tokenizer, seq_len, batch_tokens):
        out.append(batch)
        have += int(kept_tokens(batch, tokenizer).sum())
        if have >= tokens:
            break
    if not out:
        raise ModelError("the evaluation corpus holds no documents")
    return out


def _mean_activation(model, hookpoint: str, batches: list[Packed], tokenizer, device) -> Tensor:
    total: Tensor | None = None
    count = 0
    for batch in batches:
        keep = kept_tokens(batch, tokenizer).to(device)
        with capture(model, hookpoint, stop=True) as acts:
            model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
        x = acts[hookpoint][keep].double()
        total = x.sum(0) if total is None else total + x.sum(0)
        count += x.shape[0]
    if total is None or count == 0:
        raise ModelError("the evaluation corpus holds no tokens to average")
    return (total / count).float()


def _result(t: dict, n: int, stats: ReconstructionStats) -> SplicedEval:
    ce = {k: t[k] / n for k in ("clean", "spliced", "zero", "mean")}

    def recovered(ablated: float) -> float:
        return (ablated - ce["spliced"]) / (ablated - ce["clean"])

    density = stats.density()
    fvu = stats.sse / stats.m2
    return SplicedEval(
        n_tokens=n,
        ce_clean=ce["clean"],
        ce_spliced=ce["spliced"],
        ce_zero_ablated=ce["zero"],
        ce_mean_ablated=ce["mean"],
        ce_loss_recovered=recovered(ce["zero"]),
        ce_loss_recovered_mean_ablation=recovered(ce["mean"]),
        kl_spliced=t["kl_spliced"] / n,
        kl_zero_ablated=t["kl_zero"] / n,
        kl_mean_ablated=t["kl_mean"] / n,
        fvu=fvu,
        explained_variance=1 - fvu,
        normalized_mse=stats.sse / stats.sum_sq,
        l0=stats.active / stats.n,
        dead_fraction=(density == 0).double().mean().item(),
        dense_fraction=dense_fraction(density),
        density_histogram=density_histogram(density),
    )


# ---- a run directory ------------------------------------------------------------------------------


def default_eval_corpus(corpus: str) -> str:
    """The held-out split for the math corpus; other corpora are evaluated as given."""
    return "mathlm:heldout" if corpus.split(":")[0] == "mathlm" else corpus


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
    sae = load_sae(run_dir)  # ours, or any format another tool wrote
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
