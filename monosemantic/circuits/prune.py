"""Influence, pruning and scores of an attribution graph, as circuit-tracer defines them (its
`graph.py`: `normalize_matrix`, `compute_influence`, `prune_graph`, `compute_graph_scores`).

A is [target, source] over the nodes of `attribution.NodeIndex`. Normalised, each target's incoming
|weights| sum to 1; a node's influence is the weight that flows from it to the logits over paths of
any length: w (A + A^2 + ...), with w the weight of each logit node (here 1 on the target token, 0
on the alternatives: the graph explains the target).

- prune: keep the nodes holding `node_threshold` (0.8) of the total influence, then the edges holding
  `edge_threshold` (0.98) of the edge influence; tokens and logits are always kept.
- replacement score: the share of the influence on the logits that comes from tokens rather than
  error nodes (through any path); completeness score: the share of each node's normalised input that
  is not from error nodes, weighted by the node's influence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.circuits.attribution import NodeIndex


def normalize(A: Tensor) -> Tensor:
    """|A| with each row (target) summed to 1 (rows of zeros stay zero)."""
    A = A.abs()
    return A / A.sum(1, keepdim=True).clamp_min(1e-10)


def influence(A: Tensor, weights: Tensor, max_iter: int = 1000) -> Tensor:
    """weights (A + A^2 + ...): A is nilpotent (a DAG), so the series ends."""
    current = weights @ A
    total = current.clone()
    for _ in range(max_iter):
        if not bool(current.any()):
            return total
        current = current @ A
        total += current
    raise RuntimeError("influence did not converge: the graph has a cycle")


def threshold_of(scores: Tensor, share: float) -> float:
    """The smallest score among the largest ones that together hold `share` of the total."""
    ordered = scores.flatten().sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp_min(1e-30)
    cut = int(torch.searchsorted(cumulative, torch.tensor(share, dtype=cumulative.dtype)))
    return float(ordered[min(cut, ordered.shape[0] - 1)])


@dataclass
class Pruned:
    node_mask: Tensor  # [n_nodes] bool
    edge_mask: Tensor  # [n_nodes, n_nodes] bool, [target, source]
    node_influence: Tensor  # [n_nodes]


def logit_weights(index: NodeIndex, A: Tensor, target_row: int = 0) -> Tensor:
    w = torch.zeros(index.n_nodes, dtype=A.dtype)
    w[index.logit_start + target_row] = 1.0
    return w


def prune(A: Tensor, index: NodeIndex, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """circuit-tracer's `prune_graph`; see the module docstring."""
    w = logit_weights(index, A)
    node_inf = influence(normalize(A), w)
    keep = node_inf >= threshold_of(node_inf, node_threshold)
    keep[index.token_start :] = True
    pruned = A.clone()
    pruned[~keep] = 0
    pruned[:, ~keep] = 0
    norm = normalize(pruned)
    edge_scores = norm * (influence(norm, w) + w)[:, None]
    edges = edge_scores >= threshold_of(edge_scores, edge_threshold)
    # features and errors must keep an outgoing edge, features an incoming one, until nothing changes
    for _ in range(index.n_nodes):
        before = keep.clone()
        keep[: index.token_start] &= edges[:, : index.token_start].any(0)
        keep[: index.n_features] &= edges[: index.n_features].any(1)
        edges &= keep[:, None] & keep[None, :]
        if torch.equal(before, keep):
            break
    return Pruned(keep, edges, node_inf)


def scores(A: Tensor, index: NodeIndex) -> tuple[float, float]:
    """(replacement score, completeness score) of the whole graph; see the module docstring."""
    w = logit_weights(index, A)
    norm = normalize(A)
    inf = influence(norm, w)
    tokens = inf[index.token_start : index.logit_start].sum()
    errors = inf[index.error_start : index.token_start].sum()
    replacement = float(tokens / (tokens + errors).clamp_min(1e-30))
    non_error = 1 - norm[:, index.error_start : index.token_start].sum(-1)
    out = inf + w
    completeness = float((non_error * out).sum() / out.sum())
    return replacement, completeness
