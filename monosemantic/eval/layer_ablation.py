"""The model's own layers: the next-token CE cost of zero- and mean-ablating each attention and each
MLP sublayer of a causal LM, on held-out text.

For every layer L and component c (attn, mlp), the sublayer's output (`layers.L.attn.out`,
`layers.L.mlp.out`) is replaced at every position by zeros, or by its mean, and the CE (nats per
token) of the next-token predictions is compared with the clean model's. Each document is read
alone from position 0 (batches are right-padded and the padding masked, so no token sees another
document or padding); every token after the first is a target (the first, BOS where the tokenizer
has one, is never predicted); a document longer than the context is cut to it. The mean of a
sublayer's output is taken over every position of a *separate* set of documents (never the scored
ones): the positions mean ablation overwrites, BOS included. Given answer spans (character ranges,
as the math corpus' samples carry), the CE of the answer tokens alone (the tokens whose first
character lies in the span, as `mathlm.corpus.token_roles` assigns roles) is reported beside.

    scored, for_means = distinct_documents(open_corpus("mathlm:heldout"), 2000)
    result = ablate_layers(model, tokenizer, texts(scored), texts(for_means), answer_spans(scored))
    print(format_layer_ablation(result))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from monosemantic.config import ConfigError
from monosemantic.data.corpora import Corpus
from monosemantic.hooks import capture, patch
from monosemantic.models import Hookpoint, context_length, device_of, n_layers, named_hookpoints

log = logging.getLogger(__name__)

COMPONENTS = {"attn": "attn.out", "mlp": "mlp.out"}  # component -> its output's hookpoint site


@dataclass
class ComponentCost:
    """CE (nats/token) with one sublayer's output zeroed, and replaced by its mean."""

    layer: int
    component: str
    ce_zero: float
    ce_mean: float
    answer_ce_zero: float | None = None
    answer_ce_mean: float | None = None


@dataclass
class LayerAblation:
    n_documents: int
    n_tokens: int
    """next-token predictions scored"""
    n_answer_tokens: int
    n_mean_documents: int
    n_mean_positions: int
    """positions the means are taken over"""
    ce_clean: float
    answer_ce_clean: float | None
    components: list[ComponentCost]

    def to_dict(self) -> dict:
        out = asdict(self)
        for row in out["components"]:
            row.update({f"delta_{kind}": row[f"ce_{kind}"] - self.ce_clean for kind in ("zero", "mean")})
            for kind in ("zero", "mean"):
                answer = row[f"answer_ce_{kind}"]
                row[f"answer_delta_{kind}"] = None if answer is None else answer - self.answer_ce_clean
        return out


@dataclass(frozen=True)
class EncodedDocument:
    ids: list[int]
    answer: list[bool]
    """per token: whether it is an answer token"""


# ---- documents ------------------------------------------------------------------------------------


def distinct_documents(corpus: Corpus, n: int, *, max_read: int | None = None, progress: bool = False):
    """The first 2n distinct texts of `corpus`, in its order, as its documents: n to score, then n
    others for the means. The math corpus repeats its small categories' problems, so this reads on
    until it has them, or has read `max_read` documents (default 100n + 10000)."""
    max_read = max_read or 100 * n + 10_000
    seen: set[str] = set()
    chosen: list = []
    read = 0
    with tqdm(total=2 * n, desc="documents", unit="doc", disable=not progress) as bar:
        for doc in corpus.documents():
            read += 1
            if doc.text.strip() and doc.text not in seen:
                seen.add(doc.text)
                chosen.append(doc)
                bar.update()
            if len(chosen) == 2 * n or read >= max_read:
                break
    if len(chosen) < 2 * n:
        raise ConfigError(
            f"the corpus gave {len(chosen)} distinct documents in {read} read; scoring {n} documents needs "
            f"{2 * n} ({n} more for the means): ask for at most {len(chosen) // 2}"
        )
    return chosen[:n], chosen[n:]


def texts(documents: Sequence) -> list[str]:
    return [d.text for d in documents]


def answer_spans(documents: Sequence) -> list[tuple[int, int]] | None:
    """(answer_start, answer_end) of each document, where all of them have an answer (math samples)."""
    if not documents or not all(hasattr(d, "answer_start") for d in documents):
        return None
    return [(d.answer_start, d.answer_end) for d in documents]


def encode_documents(
    tokenizer, documents: Sequence[str], spans: Sequence[tuple[int, int]] | None = None, max_len: int | None = None
) -> list[EncodedDocument]:
    """Token ids of each text as the model reads it alone (BOS first and EOS last where the tokenizer
    has them, cut to `max_len`), with the tokens whose first character lies in its answer span."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out, cut = [], 0
    for i, text in enumerate(documents):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=spans is not None)
        ids = list(enc["input_ids"])
        starts = [s for s, _ in enc["offset_mapping"]] if spans is not None else [-1] * len(ids)
        if bos is not None:
            ids, starts = [bos, *ids], [-1, *starts]
        if eos is not None:
            ids, starts = [*ids, eos], [*starts, -1]
        first, end = spans[i] if spans is not None else (0, 0)
        answer = [first <= s < end for s in starts]
        cut += max_len is not None and len(ids) > max_len
        out.append(EncodedDocument(ids[:max_len], answer[:max_len]))
    if cut:
        log.warning("%d of %d documents are longer than the context (%s tokens): cut to it", cut, len(out), max_len)
    return out


def batches(docs: list[EncodedDocument], pad: int, batch_tokens: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(input_ids, attention_mask, answer) [B, T] batches, right-padded, longest documents first (so
    rows of a batch have similar lengths and little padding)."""
    order = sorted(range(len(docs)), key=lambda i: -len(docs[i].ids))
    start = 0
    while start < len(order):
        width = max(1, len(docs[order[start]].ids))
        rows = order[start : start + max(1, batch_tokens // width)]
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        answer = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, i in enumerate(rows):
            n = len(docs[i].ids)
            ids[r, :n] = torch.tensor(docs[i].ids, dtype=torch.long)
            mask[r, :n] = 1
            answer[r, :n] = torch.tensor(docs[i].answer, dtype=torch.bool)
        yield ids, mask, answer
        start += len(rows)


# ---- measuring ------------------------------------------------------------------------------------


@torch.no_grad()
def ce_sums(model: nn.Module, data: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[float, float]:
    """Summed next-token CE over every scored target, and over the answer targets alone."""
    device = device_of(model)
    total, answer = 0.0, 0.0
    for ids, mask, is_answer in data:
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # [B, T-1, vocab]
        ce = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").double()  # [B, T-1]
        scored = mask[:, 1:].bool()
        total += ce[scored].sum().item()
        answer += ce[scored & is_answer[:, 1:].to(device)].sum().item()
    return total, answer


@torch.no_grad()
def output_means(
    model: nn.Module, data: list[tuple[Tensor, Tensor, Tensor]], hooks: list[Hookpoint]
) -> tuple[dict[str, Tensor], int]:
    """The mean activation at each hookpoint over every non-padding position, and the positions' count."""
    device = device_of(model)
    sums: dict[str, Tensor] = {}
    count = 0
    with capture(model, hooks) as acts:
        for ids, mask, _ in data:
            keep = mask.bool().to(device)
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
            for name, x in acts.items():
                total = x[keep].double().sum(0)  # [d_model]
                sums[name] = sums[name] + total if name in sums else total
            count += int(keep.sum())
    if count == 0:
        raise ConfigError("the documents for the means hold no tokens")
    return {name: s / count for name, s in sums.items()}, count


def component_hooks(model: nn.Module) -> dict[tuple[int, str], Hookpoint]:
    """(layer, component) -> the hookpoint of that sublayer's output, in model order."""
    named = named_hookpoints(model)
    return {
        (layer, c): named[f"layers.{layer}.{site}"]
        for layer in range(n_layers(model))
        for c, site in COMPONENTS.items()
    }


def ablated_ce_sums(
    model: nn.Module, data: list, hooks: dict[tuple[int, str], Hookpoint], means: dict[str, Tensor], bar
) -> dict[tuple[int, str], dict[str, tuple[float, float]]]:
    """{(layer, component): {"zero" | "mean": ce_sums with that sublayer's output so replaced}}."""
    out: dict[tuple[int, str], dict[str, tuple[float, float]]] = {}
    for key, hook in hooks.items():
        mean = means[hook.name]  # [d_model] float64

        def to_mean(x: Tensor, m: Tensor = mean) -> Tensor:
            return m.to(x.dtype).expand_as(x)

        ablations: dict[str, Callable[[Tensor], Tensor]] = {"zero": torch.zeros_like, "mean": to_mean}
        out[key] = {}
        for kind, fn in ablations.items():
            with patch(model, {hook.name: fn}):
                out[key][kind] = ce_sums(model, data)
            bar.update()
    return out


def ablate_layers(
    model: nn.Module,
    tokenizer,
    scored_texts: Sequence[str],
    mean_texts: Sequence[str],
    spans: Sequence[tuple[int, int]] | None = None,
    *,
    batch_tokens: int = 2048,
    progress: bool = True,
) -> LayerAblation:
    """CE of the model clean, and with each attention and MLP sublayer's output zeroed or
    mean-ablated (see the module docstring); `spans` are the answer spans of `scored_texts`."""
    if len(set(scored_texts)) < len(scored_texts) or set(scored_texts) & set(mean_texts):
        raise ConfigError("the scored documents must be distinct, and none of them among those for the means")
    limit = context_length(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scored = encode_documents(tokenizer, scored_texts, spans, limit)
    data = list(batches(scored, pad, batch_tokens))
    n_tokens = sum(max(0, len(d.ids) - 1) for d in scored)
    n_answer = sum(sum(d.answer[1:]) for d in scored)
    if n_tokens == 0:
        raise ConfigError("the documents to score hold no next-token predictions")
    hooks = component_hooks(model)
    for_means = list(batches(encode_documents(tokenizer, mean_texts, None, limit), pad, batch_tokens))
    was_training = model.training
    model.eval()  # no dropout
    try:
        means, n_positions = output_means(model, for_means, list(hooks.values()))
        with tqdm(total=1 + 2 * len(hooks), desc="ablate layers", unit="pass", disable=not progress) as bar:
            clean, clean_answer = ce_sums(model, data)
            bar.update()
            ablated = ablated_ce_sums(model, data, hooks, means, bar)
    finally:
        model.train(was_training)

    def answer_ce(total: float) -> float | None:
        return total / n_answer if n_answer else None

    rows = []
    for (layer, component), by_kind in ablated.items():
        (zero, zero_answer), (mean, mean_answer) = by_kind["zero"], by_kind["mean"]
        rows.append(
            ComponentCost(
                layer, component, zero / n_tokens, mean / n_tokens, answer_ce(zero_answer), answer_ce(mean_answer)
            )
        )
    return LayerAblation(
        len(scored), n_tokens, n_answer, len(mean_texts), n_positions, clean / n_tokens, answer_ce(clean_answer), rows
    )


def format_layer_ablation(r: LayerAblation) -> str:
    """A header, then one row per sublayer: Δ = ablated CE − clean CE, in nats per token."""
    answer = r.answer_ce_clean is not None
    lines = [
        f"clean CE {r.ce_clean:.4f} nats/token over {r.n_tokens} tokens of {r.n_documents} distinct documents"
        + (f"; answer tokens {r.answer_ce_clean:.4f} over {r.n_answer_tokens}" if answer else ""),
        f"means over {r.n_mean_positions} positions of {r.n_mean_documents} other documents; "
        "Δ = ablated CE − clean CE (nats/token)",
        "",
        f"{'layer':>5}  {'component':<9} {'zero Δ':>9} {'mean Δ':>9}"
        + (f" {'answer zero Δ':>14} {'answer mean Δ':>14}" if answer else ""),
    ]
    for row in r.to_dict()["components"]:
        line = f"{row['layer']:>5}  {row['component']:<9} {row['delta_zero']:>+9.4f} {row['delta_mean']:>+9.4f}"
        if answer:
            line += f" {row['answer_delta_zero']:>+14.4f} {row['answer_delta_mean']:>+14.4f}"
        lines.append(line)
    return "\n".join(lines)
