"""How well a set of transcoders stands in for the model's MLPs, on held-out text (PRODUCT.md's
definitions; BOS and padding are neither spliced nor scored, as for SAEs in eval/splice.py):

- per layer: FVU and NMSE of the MLP's output; L0; CE loss recovered and KL(clean || spliced) with
  that layer's transcoder spliced in, against that MLP zero-ablated;
- all at once (the replacement model, with attention computed as usual): CE, CE recovered against
  every MLP zero-ablated, KL, and next-token agreement: the share of tokens where the replacement
  model's top prediction is the model's.

    result = evaluate_transcoders(model, tokenizer, tset.transcoders, open_corpus("mathlm:heldout"), 20_000)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from monosemantic.circuits.transcoders import check_fits, splice
from monosemantic.data.corpora import Corpus, kept_tokens
from monosemantic.eval.splice import ce_kl_sums, eval_batches
from monosemantic.hooks import capture
from monosemantic.sae import SAE


@dataclass
class LayerEval:
    layer: int
    fvu: float
    normalized_mse: float
    l0: float
    ce_spliced: float
    ce_zero_ablated: float
    ce_loss_recovered: float
    kl_spliced: float


@dataclass
class TranscoderEval:
    n_tokens: int
    ce_clean: float
    ce_all_spliced: float
    ce_all_zero_ablated: float
    ce_loss_recovered_all: float
    kl_all_spliced: float
    next_token_agreement: float
    layers: list[LayerEval] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _Sums:
    """Running sums of one layer's reconstruction: FVU = sse / (sum_sq - n ||mean||^2)."""

    def __init__(self) -> None:
        self.sse = self.sum_sq = self.active = 0.0
        self.total: torch.Tensor | None = None
        self.n = 0

    def update(self, y: torch.Tensor, y_hat: torch.Tensor, l0_sum: float) -> None:
        y, y_hat = y.double(), y_hat.double()
        self.sse += float((y - y_hat).pow(2).sum())
        self.sum_sq += float(y.pow(2).sum())
        self.total = y.sum(0) if self.total is None else self.total + y.sum(0)
        self.n += y.shape[0]
        self.active += l0_sum

    def fvu(self) -> float:
        assert self.total is not None
        return self.sse / (self.sum_sq - float(self.total.pow(2).sum()) / self.n)


def _zero(model, layers: list[int], keep: torch.Tensor):
    """Zero-ablate the MLP outputs of `layers` on kept positions: a splice with zero transcoders."""

    class Zero:
        def transcode(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x)

    return splice(model, dict.fromkeys(layers, Zero()), keep)  # type: ignore[arg-type]


@dataclass
class _Scorer:
    """Runs one batch under an edit and adds its summed CE and KL(clean || edited) to `totals[key]`."""

    model: torch.nn.Module
    ids: torch.Tensor
    mask: torch.Tensor
    clean_logp: torch.Tensor
    targets: torch.Tensor
    scored: torch.Tensor
    totals: dict[str, float]

    def __call__(self, key: str, edit) -> torch.Tensor:
        with edit:
            logits = self.model(input_ids=self.ids, attention_mask=self.mask).logits[:, :-1]
        ce, kl = ce_kl_sums(logits, self.clean_logp, self.targets, self.scored)
        self.totals[key] = self.totals.get(key, 0.0) + ce
        self.totals["kl_" + key] = self.totals.get("kl_" + key, 0.0) + kl
        return logits


@torch.no_grad()
def evaluate_transcoders(
    model, tokenizer, transcoders: list[SAE], corpus: Corpus, tokens: int, *, seq_len: int = 64, progress: bool = True
) -> TranscoderEval:
    """See the module docstring."""
    check_fits(model, transcoders)
    L = len(transcoders)
    device = next(model.parameters()).device
    sums = [_Sums() for _ in range(L)]
    ce: dict[str, float] = {}
    agree, n = 0, 0
    names = [h for i in range(L) for h in (f"layers.{i}.mlp.in", f"layers.{i}.mlp.out")]
    batches = eval_batches(corpus, tokenizer, seq_len, 2048, tokens)
    for batch in tqdm(batches, desc="transcoder eval", disable=not progress):
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        keep = kept_tokens(batch, tokenizer).to(device)
        targets, scored = ids[:, 1:], keep[:, 1:]
        with capture(model, names) as acts:
            clean = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        clean_logp = F.log_softmax(clean.float(), -1)

        run = _Scorer(model, ids, mask, clean_logp, targets, scored, ce)
        ce["clean"] = ce.get("clean", 0.0) + ce_kl_sums(clean, clean_logp, targets, scored)[0]
        for i, tc in enumerate(transcoders):
            x, y = acts[f"layers.{i}.mlp.in"][keep], acts[f"layers.{i}.mlp.out"][keep]
            z = tc.encode(x)
            sums[i].update(y, tc.decode(z, x), float((z > 0).sum()))
            run(f"spliced_{i}", splice(model, {i: tc}, keep))
            run(f"zero_{i}", _zero(model, [i], keep))
        replaced = run("all", splice(model, dict(enumerate(transcoders)), keep))
        run("all_zero", _zero(model, list(range(L)), keep))
        agree += int((replaced.argmax(-1) == clean.argmax(-1))[scored].sum())
        n += int(scored.sum())
    return _result(ce, n, agree, sums)


def _result(t: dict[str, float], n: int, agree: int, sums: list[_Sums]) -> TranscoderEval:
    m = {k: v / n for k, v in t.items()}
    recovered = lambda ablated, spliced: (ablated - spliced) / (ablated - m["clean"])  # noqa: E731
    layers = [
        LayerEval(
            layer=i,
            fvu=s.fvu(),
            normalized_mse=s.sse / s.sum_sq,
            l0=s.active / s.n,
            ce_spliced=m[f"spliced_{i}"],
            ce_zero_ablated=m[f"zero_{i}"],
            ce_loss_recovered=recovered(m[f"zero_{i}"], m[f"spliced_{i}"]),
            kl_spliced=m[f"kl_spliced_{i}"],
        )
        for i, s in enumerate(sums)
    ]
    return TranscoderEval(
        n_tokens=n,
        ce_clean=m["clean"],
        ce_all_spliced=m["all"],
        ce_all_zero_ablated=m["all_zero"],
        ce_loss_recovered_all=recovered(m["all_zero"], m["all"]),
        kl_all_spliced=m["kl_all"],
        next_token_agreement=agree / n,
        layers=layers,
    )
