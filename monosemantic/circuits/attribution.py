"""Direct effects between the nodes of one prompt's replacement model (replacement.py), as
circuit-tracer computes them: for each target node, one backward pass from its value to every leaf
of the frozen linear model, batched (each row of a batch is its own copy of the leaves).

Nodes, in circuit-tracer's order (`NodeIndex`):
    features  every active transcoder feature per (layer, position), layer-major
    errors    one per (layer, position): what the transcoder misses of the MLP's output
    tokens    one per position: its token and position embedding
    logits    the target token and the top alternatives at the last position

A feature's value, as a target, is its encoder's linear input (mlp_in . W_enc[:, latent], b_enc
left out); a logit's is the logit minus the mean logit (circuit-tracer's demeaned unembedding). The
edge source -> target is the source's value times d(target)/d(source): its direct effect. Biases are
constants, attributed to no node. `adjacency` is [target, source] over all nodes.

`reference_adjacency` is the slow check: it removes one source at a time from the frozen linear
model and records how much every target changes (exact, as the model is linear in its leaves).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.circuits.replacement import Frozen, Leaves, linear_forward


@dataclass
class NodeIndex:
    """Sizes of the node groups of one graph, in order: features, errors, tokens, logits."""

    n_features: int
    n_layers: int
    n_pos: int
    n_logits: int

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    @property
    def n_nodes(self) -> int:
        return self.n_features + self.n_errors + self.n_pos + self.n_logits

    @property
    def error_start(self) -> int:
        return self.n_features

    @property
    def token_start(self) -> int:
        return self.n_features + self.n_errors

    @property
    def logit_start(self) -> int:
        return self.token_start + self.n_pos


def node_index(frozen: Frozen, n_logits: int) -> NodeIndex:
    n_features = sum(f.pos.shape[0] for f in frozen.features)
    return NodeIndex(n_features, frozen.n_layers, frozen.ids.shape[0], n_logits)


def logit_directions(frozen: Frozen, tokens: Tensor) -> Tensor:
    """[m, d]: the demeaned unembedding rows of `tokens` (logit minus the mean logit)."""
    W_U = frozen.model.lm_head.weight.to(frozen.dtype)
    return W_U[tokens] - W_U.mean(0)


def feature_directions(frozen: Frozen, layer: int) -> Tensor:
    """[n_l, d_in]: the encoder column of each active feature of `layer`."""
    f = frozen.features[layer]
    return frozen.transcoders[layer].W_enc[:, f.latent].T.to(frozen.dtype)


def source_effects(frozen: Frozen, leaves: Leaves, grads: tuple[Tensor | None, ...]) -> Tensor:
    """[B, n_features + n_errors + n_pos]: each leaf's value times its gradient, per node."""
    L = frozen.n_layers
    g_emb, g_acts, g_err = grads[0], grads[1 : 1 + L], grads[1 + L :]
    feats = [a.detach() * (g if g is not None else torch.zeros_like(a)) for a, g in zip(leaves.acts, g_acts)]
    errs = [
        (e.detach() * g).sum(-1) if g is not None else e.new_zeros(e.shape[:2]) for e, g in zip(leaves.errors, g_err)
    ]
    assert g_emb is not None  # every target depends on the embeddings
    toks = (leaves.emb.detach() * g_emb).sum(-1)
    return torch.cat([*feats, *errs, toks], dim=1)


def _backward(frozen: Frozen, leaves: Leaves, values: Tensor) -> Tensor:
    inputs = [leaves.emb, *leaves.acts, *leaves.errors]
    grads = torch.autograd.grad(values.sum(), inputs, allow_unused=True)
    return source_effects(frozen, leaves, grads)


def adjacency(frozen: Frozen, logit_tokens: Tensor, batch_size: int = 256) -> Tensor:
    """[n_nodes, n_nodes] direct effects, [target, source]; see the module docstring."""
    index = node_index(frozen, logit_tokens.shape[0])
    A = torch.zeros(index.n_nodes, index.n_nodes, dtype=frozen.dtype)
    n_sources = index.logit_start
    row = 0
    with torch.enable_grad():
        for layer, f in enumerate(frozen.features):
            directions = feature_directions(frozen, layer)
            for start in range(0, f.pos.shape[0], batch_size):
                pos, dirs = f.pos[start : start + batch_size], directions[start : start + batch_size]
                leaves = frozen.leaves(pos.shape[0])
                mlp_ins, _ = linear_forward(frozen, leaves, upto=layer + 1)
                values = (mlp_ins[layer][torch.arange(pos.shape[0]), pos] * dirs).sum(-1)
                A[row : row + pos.shape[0], :n_sources] = _backward(frozen, leaves, values)
                row += pos.shape[0]
        directions = logit_directions(frozen, logit_tokens)
        leaves = frozen.leaves(directions.shape[0])
        _, final = linear_forward(frozen, leaves)
        assert final is not None
        values = (final[:, -1] * directions).sum(-1)
        A[index.logit_start :, :n_sources] = _backward(frozen, leaves, values)
    return A


# ---- the slow reference ---------------------------------------------------------------------------


@torch.no_grad()
def target_values(frozen: Frozen, leaves: Leaves, logit_tokens: Tensor) -> Tensor:
    """[B, n_features + n_logits]: every target node's value under `leaves`."""
    mlp_ins, final = linear_forward(frozen, leaves)
    assert final is not None
    parts = []
    for layer, f in enumerate(frozen.features):
        parts.append(mlp_ins[layer][:, f.pos] @ frozen.transcoders[layer].W_enc.to(frozen.dtype)[:, f.latent])
        parts[-1] = parts[-1].diagonal(dim1=1, dim2=2)  # [B, n_l]: feature i at its own position
    parts.append(final[:, -1] @ logit_directions(frozen, logit_tokens).T)
    return torch.cat(parts, dim=1)


def _without(frozen: Frozen, source: int, index: NodeIndex) -> Leaves:
    """The prompt's leaves (batch 1) with source node `source` removed (set to zero)."""
    leaves = frozen.leaves(1)
    leaves = Leaves(leaves.emb.detach(), [a.detach() for a in leaves.acts], [e.detach() for e in leaves.errors])
    if source < index.error_start:
        for acts in leaves.acts:
            if source < acts.shape[1]:
                acts[0, source] = 0
                return leaves
            source -= acts.shape[1]
    elif source < index.token_start:
        layer, pos = divmod(source - index.error_start, index.n_pos)
        leaves.errors[layer][0, pos] = 0
    else:
        leaves.emb[0, source - index.token_start] = 0
    return leaves


def reference_adjacency(frozen: Frozen, logit_tokens: Tensor) -> Tensor:
    """`adjacency` the slow way: one forward per source node with that node removed."""
    index = node_index(frozen, logit_tokens.shape[0])
    A = torch.zeros(index.n_nodes, index.n_nodes, dtype=frozen.dtype)
    full = target_values(frozen, frozen.leaves(1), logit_tokens)[0]
    targets = torch.cat([torch.arange(index.n_features), torch.arange(index.logit_start, index.n_nodes)])
    for source in range(index.logit_start):
        A[targets, source] = full - target_values(frozen, _without(frozen, source, index), logit_tokens)[0]
    return A
