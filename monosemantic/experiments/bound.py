"""The ablation bound: the whole activation at a hookpoint replaced by its mean, at the positions an
ablation touches. Ablating features with the error term kept changes only their share of the
activation, so no set of features at that hookpoint and those positions is expected to cost more
than this (PRODUCT.md, "Ablation bound"); it needs no SAE, only the model.

    means = activation_means(model, tokenizer, ["layers.1.resid.post"], texts)   # {hookpoint: [d]}
    with mean_replaced(model, "layers.1.resid.post", means["layers.1.resid.post"], [3, 4]):
        logits = model(input_ids=ids).logits

The mean is taken over every token of the given documents but BOS (each document read alone from
position 0, cut to the context, EOS included where the tokenizer adds one): the tokens an SAE trains
on and an intervention may overwrite.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from monosemantic.data.corpora import Corpus, encode
from monosemantic.errors import MonosemanticError
from monosemantic.experiments.interventions import Firing, Positions, position_mask
from monosemantic.hooks import capture, patch
from monosemantic.models import by_length, context_length, device_of


class BoundError(MonosemanticError, ValueError):
    """A bound that cannot be measured: no text for the mean, positions it cannot read."""


def first_documents(corpus: Corpus, n: int) -> list[str]:
    """The texts of the corpus' first `n` non-empty documents (the mean's documents)."""
    texts = []
    for doc in corpus.documents():
        if doc.text.strip():
            texts.append(doc.text)
            if len(texts) == n:
                break
    if not texts:
        raise BoundError("the corpus holds no text to take the activation's mean over")
    return texts


@torch.no_grad()
def activation_means(model: nn.Module, tokenizer, hookpoints: list[str], texts: list[str]) -> dict[str, Tensor]:
    """{hookpoint: [d] float32} the mean activation over every non-BOS token of `texts`."""
    limit = context_length(model)
    sequences = [encode(tokenizer, t)[:limit] for t in texts]  # a document longer than the context: cut
    skip = 1 if tokenizer.bos_token_id is not None else 0
    sums: dict[str, Tensor] = {}
    count = 0
    device = device_of(model)
    with capture(model, hookpoints) as acts:
        for length, members in by_length(sequences).items():
            if length <= skip:
                continue
            for start in range(0, len(members), 64):
                rows = members[start : start + 64]
                model(input_ids=torch.tensor([sequences[i] for i in rows], device=device))
                for name, x in acts.items():  # x [B, T, d]
                    total = x[:, skip:].double().sum((0, 1)).cpu()
                    sums[name] = sums[name] + total if name in sums else total
                count += len(rows) * (length - skip)
    if count == 0:
        raise BoundError("the documents for the activation's mean hold no token after BOS")
    return {name: (total / count).float() for name, total in sums.items()}


def mean_replacement(mean: Tensor, positions: Positions, sae: nn.Module | None = None):
    """A patch function: x [B, T, d] -> x with the rows at `positions` replaced by `mean` [d]
    (`Firing` positions are read from `sae`'s encoding of x)."""

    def edit(x: Tensor) -> Tensor:
        z = None
        if isinstance(positions, Firing):
            if sae is None:
                raise BoundError("the bound at the positions where features fire needs the SAE that has them")
            z = sae.encode(x.reshape(-1, x.shape[-1]).float())
        mask = position_mask(positions, x.shape[:2], x.device, z)  # [B, T]
        return torch.where(mask[..., None], mean.to(device=x.device, dtype=x.dtype), x)

    return edit


@contextlib.contextmanager
def mean_replaced(
    model: nn.Module, hookpoint: str, mean: Tensor, positions: Positions, sae: nn.Module | None = None
) -> Iterator[None]:
    """Forwards in the block run with the activation at `hookpoint` replaced by `mean` at `positions`."""
    with patch(model, {hookpoint: mean_replacement(mean, positions, sae)}):
        yield
