"""Sparse probing: how well single latents, and the best k latents, predict a binary property,
against the best single neuron and a linear probe on all neurons (Gurnee et al. 2023; Gao et al.
2024, "Scaling and evaluating sparse autoencoders", sec. 4.5).

Every probe is fit on a train split and scored by accuracy on a held-out split of the same classes
(balanced by subsampling, so chance is 0.5):
- best single feature: for each column, the best threshold and sign on the train split; the column
  with the best train accuracy is scored on the test split;
- best k features: the k columns of largest standardised mean difference between the classes (on
  the train split), then a logistic regression on them;
- linear probe: a logistic regression (L2) on all columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ProbeResult:
    single: float  # test accuracy of the best single column
    single_index: int
    top_k: float  # test accuracy of the logistic regression on the best k columns
    k: int
    top_k_indices: list[int]


def threshold_fit(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per column of x [n, d], the best rule "y = (sign * x > t)": (train accuracy [d], threshold [d],
    sign [d] of +-1). Thresholds sit between consecutive sorted values."""
    n = x.shape[0]
    values, order = x.sort(0)  # [n, d]
    pos = y.float()[order]  # labels in sorted order, per column
    # predicting 1 for the top n - i values (above threshold i): correct = negatives below + positives above
    below_neg = torch.cat([torch.zeros(1, x.shape[1]), torch.cumsum(1 - pos, 0)])  # [n+1, d]
    above_pos = pos.sum(0) - torch.cat([torch.zeros(1, x.shape[1]), torch.cumsum(pos, 0)])
    acc_up = (below_neg + above_pos) / n  # [n+1, d]
    acc_down = 1 - acc_up  # the opposite sign
    best_up, i_up = acc_up.max(0)
    best_down, i_down = acc_down.max(0)
    use_up = best_up >= best_down
    index = torch.where(use_up, i_up, i_down)
    padded = torch.cat([values[:1] - 1, values, values[-1:] + 1])  # [n+2, d]
    cols = torch.arange(x.shape[1])
    threshold = (padded[index, cols] + padded[index + 1, cols]) / 2
    sign = torch.where(use_up, 1.0, -1.0)
    return torch.where(use_up, best_up, best_down), torch.where(use_up, threshold, -threshold), sign


def logistic_fit(x: Tensor, y: Tensor, l2: float = 1e-3, steps: int = 100) -> tuple[Tensor, Tensor]:
    """L2-regularised logistic regression by full-batch L-BFGS on standardised columns: (w, b) for raw x."""
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    xs = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w + b, y.float()) + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w_raw = (w / std).detach()
    return w_raw, (b - (mean / std * w).sum()).detach()


def accuracy(x: Tensor, y: Tensor, w: Tensor, b: Tensor) -> float:
    return ((x @ w + b > 0) == y.bool()).float().mean().item()


def balanced_split(y: Tensor, seed: int = 0, test_fraction: float = 0.3) -> tuple[Tensor, Tensor]:
    """Indices (train, test) with equally many of each class in each split."""
    g = torch.Generator().manual_seed(seed)
    pos, neg = torch.nonzero(y).flatten(), torch.nonzero(~y.bool()).flatten()
    n = min(pos.numel(), neg.numel())
    if n < 4:
        raise ValueError(f"a probe needs at least 4 examples of each class, got {pos.numel()} and {neg.numel()}")
    pos, neg = pos[torch.randperm(pos.numel(), generator=g)[:n]], neg[torch.randperm(neg.numel(), generator=g)[:n]]
    n_test = max(2, int(n * test_fraction))
    return torch.cat([pos[n_test:], neg[n_test:]]), torch.cat([pos[:n_test], neg[:n_test]])


def sparse_probe(x: Tensor, y: Tensor, k: int = 8, seed: int = 0) -> ProbeResult:
    """Best single column and best-k logistic regression for labels y [n] (bool) from x [n, d]."""
    train, test = balanced_split(y, seed)
    _, threshold, sign = threshold_fit(x[train], y[train])
    train_acc = ((sign * x[train] > threshold) == y[train, None].bool()).float().mean(0)
    j = int(train_acc.argmax())
    single = ((sign[j] * x[test, j] > threshold[j]) == y[test].bool()).float().mean().item()
    a, b = x[train][y[train].bool()], x[train][~y[train].bool()]
    score = (a.mean(0) - b.mean(0)).abs() / (x[train].std(0) + 1e-6)
    top = score.topk(min(k, x.shape[1])).indices
    w, bias = logistic_fit(x[train][:, top], y[train])
    return ProbeResult(single, j, accuracy(x[test][:, top], y[test], w, bias), len(top), top.tolist())


def linear_probe(x: Tensor, y: Tensor, seed: int = 0) -> float:
    """Test accuracy of a logistic regression on all columns."""
    train, test = balanced_split(y, seed)
    w, b = logistic_fit(x[train], y[train])
    return accuracy(x[test], y[test], w, b)
