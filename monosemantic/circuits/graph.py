"""An attribution graph for one prompt and target token, as a JSON-able dict, and its top paths.

    graph = trace_prompt(model, tokenizer, transcoders, "47 + 35 = ", TraceConfig(target="8"))
    graph["scores"]            # replacement and completeness, of the full and the pruned graph
    graph["nodes"], graph["edges"], graph["paths"]

Node ids: `f:L:P:I` (feature I of layer L's transcoder at position P), `e:L:P` (layer L's error at
P), `t:P` (the token at P), `l:TOKEN_ID` (a logit at the last position). Edge weights are direct
effects (attribution.py), pruned as circuit-tracer prunes (prune.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from monosemantic.circuits.attribution import NodeIndex, adjacency, node_index
from monosemantic.circuits.prune import normalize, prune, scores
from monosemantic.circuits.replacement import Frozen, freeze
from monosemantic.config import ConfigError
from monosemantic.data.corpora import prompt_ids
from monosemantic.models import context_length
from monosemantic.sae import SAE


@dataclass
class TraceConfig:
    target: str | None = None
    """the target token (its text, e.g. 8); default: the model's top prediction"""
    alternatives: int = 4
    """logit nodes besides the target: the most likely other tokens"""
    node_threshold: float = 0.8
    """keep the nodes that hold this share of the influence on the target (circuit-tracer's default)"""
    edge_threshold: float = 0.98
    """keep the edges that hold this share of the edge influence (circuit-tracer's default)"""
    paths: int = 5
    """top paths to report (by the product of normalised edge weights, from a token or error to the target)"""
    batch_size: int = 256
    """target nodes per batched backward pass"""

    def __post_init__(self) -> None:
        for name in ("node_threshold", "edge_threshold"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ConfigError(f"{name} must be in (0, 1], got {value}")
        for name in ("alternatives", "paths"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


def target_token(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ConfigError(f"target {text!r} is {len(ids)} tokens ({ids}); give exactly one token, e.g. the next digit")
    return ids[0]


def node_ids(frozen: Frozen, index: NodeIndex, logit_tokens: list[int]) -> list[dict]:
    """One description per node, in `NodeIndex` order."""
    out = []
    for layer, f in enumerate(frozen.features):
        for p, i, a in zip(f.pos.tolist(), f.latent.tolist(), f.act.tolist()):
            out.append(
                {"id": f"f:{layer}:{p}:{i}", "kind": "feature", "layer": layer, "pos": p, "latent": i, "activation": a}
            )
    for layer in range(index.n_layers):
        norms = frozen.errors[layer].norm(dim=-1).tolist()
        out += [
            {"id": f"e:{layer}:{p}", "kind": "error", "layer": layer, "pos": p, "norm": norms[p]}
            for p in range(index.n_pos)
        ]
    out += [{"id": f"t:{p}", "kind": "token", "pos": p} for p in range(index.n_pos)]
    probs = frozen.logits[-1].float().softmax(-1)
    out += [{"id": f"l:{t}", "kind": "logit", "token_id": t, "probability": float(probs[t])} for t in logit_tokens]
    return out


def top_paths(norm: Tensor, edges: Tensor, start: int, n: int) -> list[tuple[float, list[int]]]:
    """The n paths into node `start` along kept `edges` [target, source] with the largest product of
    normalised weights, each from a node with no kept input; beam search, nodes listed source first."""
    beam: list[tuple[float, list[int]]] = [(1.0, [start])]
    done: list[tuple[float, list[int]]] = []
    while beam:
        grown = []
        for score, path in beam:
            sources = edges[path[0]].nonzero().flatten().tolist()
            if not sources:
                done.append((score, path))
            grown += [(score * float(norm[path[0], s]), [s, *path]) for s in sources]
        beam = sorted(grown, key=lambda sp: -sp[0])[: max(n, 1) * 4]
    return sorted(done, key=lambda sp: -sp[0])[:n]


def trace_prompt(model, tokenizer, transcoders: list[SAE], prompt: str, cfg: TraceConfig) -> dict:
    """The attribution graph of `prompt` for the next token; see the module docstring."""
    started = time.perf_counter()
    if not prompt:
        raise ConfigError("the prompt is empty; give the text whose next token the graph explains")
    ids = torch.tensor(prompt_ids(tokenizer, prompt), device=next(model.parameters()).device)
    limit = context_length(model) or 10**9
    if ids.numel() == 0 or ids.numel() > limit:
        raise ConfigError(f"the prompt is {ids.numel()} tokens; give 1 to {limit} tokens of text")
    frozen = freeze(model, transcoders, ids)
    top = frozen.logits[-1].argsort(descending=True).tolist()
    target = target_token(tokenizer, cfg.target) if cfg.target is not None else top[0]
    logit_tokens = [target, *[t for t in top if t != target][: cfg.alternatives]]
    A = adjacency(frozen, torch.tensor(logit_tokens), cfg.batch_size)
    index = node_index(frozen, len(logit_tokens))
    kept = prune(A, index, cfg.node_threshold, cfg.edge_threshold)
    nodes = node_ids(frozen, index, logit_tokens)
    for node, inf in zip(nodes, kept.node_influence.tolist()):
        node["influence"] = inf
    tokens = ids.tolist()
    for node in nodes:
        if "pos" in node:
            node["token"] = tokenizer.decode([tokens[node["pos"]]])
        if node["kind"] == "logit":
            node["token"] = tokenizer.decode([node["token_id"]])
    pruned_A = A * kept.edge_mask
    targets, sources = kept.edge_mask.nonzero(as_tuple=True)
    norm = normalize(pruned_A)
    paths = top_paths(norm, kept.edge_mask, index.logit_start, cfg.paths)
    full_scores, pruned_scores = scores(A, index), scores(pruned_A, index)
    return {
        "prompt": prompt,
        "tokens": [tokenizer.decode([t]) for t in tokens],
        "target": {
            "token": tokenizer.decode([target]),
            "token_id": target,
            "probability": nodes[index.logit_start]["probability"],
        },
        "settings": asdict(cfg),
        "scores": {
            "replacement": full_scores[0],
            "completeness": full_scores[1],
            "pruned_replacement": pruned_scores[0],
            "pruned_completeness": pruned_scores[1],
        },
        "counts": {
            "nodes": index.n_nodes,
            "features": index.n_features,
            "kept_nodes": int(kept.node_mask.sum()),
            "kept_edges": len(targets),
        },
        "nodes": [node for node, keep in zip(nodes, kept.node_mask.tolist()) if keep],
        "edges": [
            {"source": nodes[s]["id"], "target": nodes[t]["id"], "weight": float(A[t, s])}
            for t, s in zip(targets.tolist(), sources.tolist())
        ],
        "paths": [{"score": score, "nodes": [nodes[i]["id"] for i in path]} for score, path in paths],
        "seconds": time.perf_counter() - started,
    }


def describe_node(node: dict) -> str:
    """A node in a line of text: L3 f40 @'5'(6), err L2 @'='(5), tok '4'(1), logit '8'."""
    where = f"@{node.get('token', '')!r}({node.get('pos')})"
    kind = node["kind"]
    if kind == "feature":
        return f"L{node['layer']} f{node['latent']} {where}"
    if kind == "error":
        return f"err L{node['layer']} {where}"
    if kind == "token":
        return f"tok {where}"
    return f"logit {node['token']!r}"
