"""Attribution graphs checked against interventions in the real model (Ameisen et al. 2025, "Circuit
Tracing", §"Validation"): for each prompt, ablate the graph's most influential feature nodes one at a
time (intervene.py: attention and norms live, error terms of the clean run kept) and compare the real
change of the target logit with the graph's prediction; the same for as many random active features
of the prompt (the control). Correlations are per prompt, averaged over prompts with a bootstrap CI.

The prediction of ablating feature i (activation a_i), in the linearised replacement model (attention
and norm scales frozen, each active feature linear in its pre-activation, active sets fixed):

    direct  -A[t, i]                            the graph's edge from i to the target logit
    total   -a_i * tau_i,  tau = g + W^T tau    every path: g_i = A[t, i] / a_i, W[j, i] = A[j, i] / a_i

`total` is the primary one: ablating a feature in the real model also moves every later feature,
which is what the paths through them account for; `direct` keeps them fixed. The target logit is
demeaned (minus the mean logit), as the graph's logit node is.

    result = check_graphs(model, tokenizer, tset.transcoders, CheckConfig(prompts=24))
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic.circuits.attribution import NodeIndex, adjacency, node_index
from monosemantic.circuits.intervene import Edit, clean_run, edited_logits
from monosemantic.circuits.prune import influence, logit_weights, normalize
from monosemantic.circuits.replacement import Frozen, freeze
from monosemantic.config import ConfigError
from monosemantic.data.corpora import prompt_ids
from monosemantic.mathlm.corpus import CATEGORIES, MathCorpus
from monosemantic.sae import SAE

GROUPS = ("graph", "random")
PREDICTIONS = ("total", "direct")


@dataclass
class CheckConfig:
    prompts: int = 24
    """held-out problems (distinct; never in the transcoders' training split) to build graphs of"""
    categories: str = "add_2d,sub_2d"
    """corpus categories to draw them from, comma-separated (e.g. add_2d,sub_2d,estimate,words_es)"""
    nodes: int = 10
    """feature nodes per graph ablated one at a time: the top ones by influence on the target, and as
    many random active features (the control)"""
    bootstrap: int = 2000
    """bootstrap resamples of the prompts for the 95% confidence intervals"""
    seed: int = 0
    """seed of the random control and the bootstrap"""

    def __post_init__(self) -> None:
        unknown = [c for c in self.category_list if c not in CATEGORIES]
        if unknown:
            raise ConfigError(f"unknown categories {unknown}; expected some of {', '.join(CATEGORIES)}")
        for name in ("prompts", "nodes", "bootstrap"):
            if getattr(self, name) < 2:
                raise ConfigError(f"{name} must be >= 2 (a correlation needs two points), got {getattr(self, name)}")

    @property
    def category_list(self) -> list[str]:
        return [c.strip() for c in self.categories.split(",") if c.strip()]


def heldout_prompts(cfg: CheckConfig, max_documents: int = 200_000) -> list[tuple[str, str]]:
    """(prompt, answer) of distinct held-out problems, in corpus order, taking
    the categories in turn."""
    wanted = cfg.category_list
    per = {c: [] for c in wanted}  # type: dict[str, list[tuple[str, str]]]
    seen: set[str] = set()
    quota = -(-cfg.prompts // len(wanted))
    for sample in MathCorpus("heldout", seed=cfg.seed).documents():
        key = sample.canonical_prompt()  # one problem, whatever its operator's form (`-` or `−`)
        if sample.category in per and len(per[sample.category]) < quota and key not in seen:
            seen.add(key)
            per[sample.category].append((sample.prompt, sample.answer))
        if all(len(v) >= quota for v in per.values()) or sample.id >= max_documents:
            break
    interleaved = [p for group in zip(*per.values()) for p in group]
    return interleaved[: cfg.prompts]


def predicted_ablation(A: Tensor, index: NodeIndex, acts: Tensor, target_row: int = 0) -> dict[str, Tensor]:
    """{"direct", "total"}: [n_features] each, the change of the target logit node when each feature
    is removed (see the module docstring). A [target, source]; acts [n_features], all > 0."""
    F, t = index.n_features, index.logit_start + target_row
    g = A[t, :F] / acts
    W = A[:F, :F] / acts[None, :]  # [j, i]: d a_j / d a_i, zero unless i's layer is below j's
    eye = torch.eye(F, dtype=A.dtype)
    # features are in layer order, so W is strictly lower triangular and I - W^T upper triangular
    tau = torch.linalg.solve_triangular(eye - W.T, g[:, None], upper=True)[:, 0]
    return {"direct": -A[t, :F], "total": -acts * tau}


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson's r; nan when either side has no variance."""
    a, b = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


def bootstrap_mean(values: list[float], n: int, seed: int) -> dict:
    """Mean of the finite `values` and its percentile bootstrap 95% CI."""
    v = torch.tensor([x for x in values if x == x], dtype=torch.float64)
    if v.numel() == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    gen = torch.Generator().manual_seed(seed)
    means = v[torch.randint(v.numel(), (n, v.numel()), generator=gen)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"mean": float(v.mean()), "lo": lo, "hi": hi, "n": int(v.numel())}


def _locations(frozen: Frozen) -> list[tuple[int, int, int, float]]:
    """(layer, pos, latent, activation) of every feature node, in NodeIndex order."""
    return [
        (layer, p, i, a)
        for layer, f in enumerate(frozen.features)
        for p, i, a in zip(f.pos.tolist(), f.latent.tolist(), f.act.tolist())
    ]


def _demeaned(logits: Tensor, token: int) -> float:
    return float(logits[token] - logits.mean())


def check_graph(model, tokenizer, transcoders: list[SAE], prompt: str, answer: str, cfg: CheckConfig) -> dict:
    """One prompt: every ablated node's predictions and real effect, and the correlations per group.
    The target is the answer's first token."""
    ids = torch.tensor(prompt_ids(tokenizer, prompt), device=next(model.parameters()).device)
    tok = tokenizer.encode(answer, add_special_tokens=False)[0]
    frozen = freeze(model, transcoders, ids)
    index = node_index(frozen, 1)
    A = adjacency(frozen, torch.tensor([tok]))
    where = _locations(frozen)
    acts = torch.tensor([w[3] for w in where], dtype=A.dtype)
    pred = predicted_ablation(A, index, acts)
    inf = influence(normalize(A), logit_weights(index, A))[: index.n_features]
    top = inf.argsort(descending=True)[: cfg.nodes].tolist()
    rest = sorted(set(range(index.n_features)) - set(top))
    rng = random.Random(f"{cfg.seed}:{prompt}")
    chosen = {"graph": top, "random": rng.sample(rest, min(cfg.nodes, len(rest)))}
    clean = clean_run(model, transcoders, ids)
    base = _demeaned(clean.logits[-1], tok)
    rows = []
    for group, nodes in chosen.items():
        for i in nodes:
            layer, pos, latent, act = where[i]
            logits = edited_logits(model, transcoders, clean, ids, [Edit(layer, pos, latent, 0.0)])
            row = {"group": group, "layer": layer, "pos": pos, "latent": latent, "activation": act}
            row.update(influence=float(inf[i]), real=_demeaned(logits, tok) - base)
            rows.append(row | {p: float(pred[p][i]) for p in PREDICTIONS})
    corr = {
        f"{g}_{p}": pearson([r[p] for r in rows if r["group"] == g], [r["real"] for r in rows if r["group"] == g])
        for g in GROUPS
        for p in PREDICTIONS
    }
    probs = clean.logits[-1].float().softmax(-1)
    target = tokenizer.decode([tok])
    return {"prompt": prompt, "target": target, "probability": float(probs[tok]), "rows": rows, "correlation": corr}


def check_graphs(model, tokenizer, transcoders: list[SAE], cfg: CheckConfig, progress: bool = True) -> dict:
    """`check_graph` over held-out prompts, with the mean correlation per group and prediction."""
    prompts = heldout_prompts(cfg)
    if len(prompts) < cfg.prompts:
        raise ConfigError(
            f"found {len(prompts)} distinct held-out problems of {cfg.categories}; ask for fewer --prompts or "
            "add categories"
        )
    graphs = [
        check_graph(model, tokenizer, transcoders, p, t, cfg)
        for p, t in tqdm(prompts, desc="graphs", disable=not progress)
    ]
    summary = {
        key: bootstrap_mean([g["correlation"][key] for g in graphs], cfg.bootstrap, cfg.seed)
        for key in graphs[0]["correlation"]
    }
    for p in PREDICTIONS:
        g, r = summary[f"graph_{p}"], summary[f"random_{p}"]
        summary[f"gap_{p}"] = {"apart": g["lo"] > r["hi"], "shortfall": max(0.0, r["hi"] - g["lo"])}
    return {"settings": asdict(cfg), "summary": summary, "graphs": graphs}


def format_table(result: dict) -> str:
    """The summary as a table: one row per group and prediction."""
    lines = ["nodes    prediction  prompts  mean r   95% CI"]
    s = result["summary"]
    for g in GROUPS:
        for p in PREDICTIONS:
            m = s[f"{g}_{p}"]
            lines.append(f"{g:8s} {p:10s} {m['n']:8d} {m['mean']:7.3f}   [{m['lo']:.3f}, {m['hi']:.3f}]")
    for p in PREDICTIONS:
        gap = s[f"gap_{p}"]
        verdict = "apart" if gap["apart"] else f"overlap by {gap['shortfall']:.3f}"
        lines.append(f"{p}: graph vs random CIs {verdict}")
    return "\n".join(lines)
