"""The numbers and figures of examples/addition_circuit.md: attribution graphs of two-digit additions
on the built-in model (with and without a carry, in Spanish words, with `≈`), where their influence
lies by layer and position, their top features, and ablations of feature groups in the real model.

    python examples/addition_circuit.py runs/tc500k --check runs/tc500k/graphs/check.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from monosemantic.circuits.graph import TraceConfig, trace_prompt  # noqa: E402
from monosemantic.circuits.intervene import clean_run, intervene  # noqa: E402
from monosemantic.circuits.transcoders import load_transcoder_set  # noqa: E402
from monosemantic.data.corpora import prompt_ids  # noqa: E402
from monosemantic.models import load_model  # noqa: E402

PROMPTS = [  # (name, prompt, target, groups of positions to ablate: {name: [token positions]})
    ("carry", "47 + 35 = ", "8", {"tens 4,3": [1, 6], "units 7,5": [2, 7], "=": [9], "last ' '": [10]}),
    ("no carry", "43 + 25 = ", "6", {"tens 4,2": [1, 6], "units 3,5": [2, 7], "=": [9], "last ' '": [10]}),
    (
        "Spanish",
        "cuarenta y siete más treinta y cinco es igual a ",
        "ochenta",
        {"tens cuarenta,treinta": [1, 9], "units siete,cinco": [5, 13], "es igual a": [15, 17, 19], "last ' '": [20]},
    ),
    ("≈", "47 + 35 ≈ ", "8", {"tens 4,3": [1, 6], "units 7,5": [2, 7], "≈": [9], "last ' '": [10]}),
    ("= 2nd digit", "47 + 35 = 8", "2", {"units 7,5": [2, 7], "=": [9], "last '8'": [11]}),
    ("≈ 2nd digit", "47 + 35 ≈ 8", "0", {"units 7,5": [2, 7], "≈": [9], "last '8'": [11]}),
]


def influence_map(graph: dict, n_layers: int) -> torch.Tensor:
    """[layers, positions]: the influence on the target of the graph's kept features, summed."""
    grid = torch.zeros(n_layers, len(graph["tokens"]))
    for node in graph["nodes"]:
        if node["kind"] == "feature":
            grid[node["layer"], node["pos"]] += node["influence"]
    return grid


def ablate_groups(model, tokenizer, tcs, prompt: str, target: str, groups: dict) -> list[dict]:
    """Each group: every active feature at its positions (all layers) set to 0 in the real model."""
    ids = prompt_ids(tokenizer, prompt)
    tok = tokenizer.encode(target, add_special_tokens=False)[0]
    vocab = list(range(model.config.vocab_size))
    out = []
    with torch.no_grad():
        for name, positions in groups.items():
            edits = []
            for layer, tc in enumerate(tcs):
                x = clean_mlp_inputs(model, ids)[layer]
                z = tc.encode(x)
                for p in positions:
                    edits += [{"layer": layer, "pos": p, "latent": int(i), "value": 0.0} for i in z[p].nonzero()[:, 0]]
            res = intervene(model, tcs, ids, edits, vocab)
            clean, edited = torch.tensor(res["clean"]), torch.tensor(res["edited"])
            top = int(edited.argmax())
            out.append(
                {
                    "group": name,
                    "features": len(edits),
                    "target_logit_change": float(edited[tok] - clean[tok]),
                    "p_target": (float(clean.softmax(-1)[tok]), float(edited.softmax(-1)[tok])),
                    "top": tokenizer.decode([top]),
                    "p_top": float(edited.softmax(-1)[top]),
                }
            )
    return out


CARRY_PAIRS = [  # (carry, the same sum without the carry: the units digit of the first operand lowered)
    ("47 + 35 = ", "42 + 35 = "),
    ("28 + 54 = ", "21 + 54 = "),
    ("19 + 23 = ", "11 + 23 = "),
    ("36 + 26 = ", "32 + 26 = "),
    ("58 + 17 = ", "51 + 17 = "),
    ("65 + 29 = ", "60 + 29 = "),
]


def carry_features(model, tokenizer, tcs) -> None:
    """Features at the answer position that are stronger on every carry prompt than on its no-carry
    twin; then ablated on the carry prompts and set to their carry values on the no-carry ones."""
    last = {
        p: [z[-1] for z in clean_run(model, tcs, torch.tensor(prompt_ids(tokenizer, p))).z]
        for pair in CARRY_PAIRS
        for p in pair
    }
    D = torch.stack([torch.stack([last[c][L] - last[n][L] for L in range(len(tcs))]) for c, n in CARRY_PAIRS])
    score = torch.where((D > 0).all(0), D.mean(0), torch.zeros(()))  # [layers, d_sae]
    found = [(L, i) for L, i in (score > 0.1).nonzero().tolist()]
    print("\n## carry: features higher on every carry prompt at '= ' (layer, latent, mean difference):")
    print("  " + ", ".join(f"L{L} f{i} {float(score[L, i]):.2f}" for L, i in found))
    digit = {d: tokenizer.encode(str(d), add_special_tokens=False)[0] for d in range(10)}
    for c, n in CARRY_PAIRS:
        tens = int(c[0]) + int(c[5])
        toks, T = [digit[(tens + 1) % 10], digit[tens % 10]], len(prompt_ids(tokenizer, c)) - 1
        off = intervene(
            model,
            tcs,
            prompt_ids(tokenizer, c),
            [{"layer": L, "pos": T, "latent": i, "value": 0.0} for L, i in found],
            toks,
        )
        on = [{"layer": L, "pos": T, "latent": i, "value": float(last[c][L][i])} for L, i in found]
        steer = intervene(model, tcs, prompt_ids(tokenizer, n), on, toks)
        gap = lambda r, k: r[k][0] - r[k][1]  # noqa: E731
        print(
            f"  {c!r}: logit({(tens + 1) % 10}) - logit({tens % 10}) {gap(off, 'clean'):+.2f}"
            f" -> ablated {gap(off, 'edited'):+.2f}"
            f" | {n!r}: {gap(steer, 'clean'):+.2f} -> carry features set {gap(steer, 'edited'):+.2f}"
        )


def clean_mlp_inputs(model, ids: list[int]) -> list[torch.Tensor]:
    from monosemantic.hooks import capture

    names = [f"layers.{i}.mlp.in" for i in range(model.config.n_layer)]
    with capture(model, names) as acts:
        model(input_ids=torch.tensor([ids]))
    return [acts[n][0] for n in names]


def scatter(check: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=110)
    for group, colour in (("random", "tab:grey"), ("graph", "tab:blue")):
        rows = [r for g in check["graphs"] for r in g["rows"] if r["group"] == group]
        label = "top graph nodes" if group == "graph" else "random active features"
        ax.scatter([r["total"] for r in rows], [r["real"] for r in rows], s=7, alpha=0.6, c=colour, label=label)
    lim = ax.get_xlim()
    ax.plot(lim, lim, lw=0.8, c="k", ls=":", label="y = x")
    ax.set_xlabel("predicted change of target logit (graph, total effect)")
    ax.set_ylabel("real change (ablation in the model)")
    ax.set_title(f"{len(check['graphs'])} held-out additions/subtractions", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def heatmaps(graphs: list[tuple[str, dict]], n_layers: int, path: Path) -> None:
    fig, axes = plt.subplots(2, (len(graphs) + 1) // 2, figsize=(3.6 * ((len(graphs) + 1) // 2), 5.6), dpi=90)
    axes = axes.flatten()
    for ax, (name, graph) in zip(axes, graphs):
        grid = influence_map(graph, n_layers)
        image = ax.imshow(grid, aspect="auto", origin="lower", cmap="Blues")
        fig.colorbar(image, ax=ax, label="feature influence on target", shrink=0.8)
        labels = [t if t.strip() else "·" for t in graph["tokens"]]
        ax.set_xticks(range(len(labels)), [s[:4] for s in labels], fontsize=6, rotation=90)
        ax.set_xlabel("position (token)")
        ax.set_ylabel("layer")
        ax.set_title(f"{name}: {graph['prompt'].strip()[:22]} → {graph['target']['token']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--check", default=None, help="check.json of `monosemantic check-graphs` for the scatter plot")
    ap.add_argument("--figures", default="examples/figures")
    args = ap.parse_args()
    tset = load_transcoder_set(args.run)
    model, tokenizer = load_model(tset.model)
    tcs = tset.transcoders
    graphs = []
    for name, prompt, target, groups in PROMPTS:
        graph = trace_prompt(model, tokenizer, tcs, prompt, TraceConfig(target=target))
        graphs.append((name, graph))
        s, t = graph["scores"], graph["target"]
        print(f"\n## {name}: {prompt!r} -> {t['token']!r} p={t['probability']:.3f}")
        print(f"replacement {s['replacement']:.3f} completeness {s['completeness']:.3f}; {graph['counts']}")
        grid = influence_map(graph, len(tcs))
        per_pos = grid.sum(0)
        print(
            "feature influence by position:",
            ", ".join(f"{graph['tokens'][p]!r}:{v:.3f}" for p, v in enumerate(per_pos.tolist())),
        )
        print("feature influence by layer:", ", ".join(f"L{i}:{v:.3f}" for i, v in enumerate(grid.sum(1).tolist())))
        errors = sum(n["influence"] for n in graph["nodes"] if n["kind"] == "error")
        tokens = sum(n["influence"] for n in graph["nodes"] if n["kind"] == "token")
        print(f"influence of kept error nodes {errors:.3f}, of tokens {tokens:.3f}")
        feats = sorted((n for n in graph["nodes"] if n["kind"] == "feature"), key=lambda n: -n["influence"])
        for n in feats[:8]:
            print(
                f"  L{n['layer']} f{n['latent']} @{n['token']!r}({n['pos']}) act {n['activation']:.2f}"
                f" influence {n['influence']:.4f}"
            )
        for row in ablate_groups(model, tokenizer, tcs, prompt, target, groups):
            print(
                f"  ablate {row['group']:24s} ({row['features']:3d} features): "
                f"target logit {row['target_logit_change']:+.2f}, "
                f"p {row['p_target'][0]:.3f} -> {row['p_target'][1]:.3f}; top {row['top']!r} p={row['p_top']:.3f}"
            )
    carry_features(model, tokenizer, tcs)
    out = Path(args.figures)
    heatmaps(graphs, len(tcs), out / "addition_influence.png")
    if args.check:
        scatter(json.loads(Path(args.check).read_text()), out / "addition_check.png")


if __name__ == "__main__":
    main()
