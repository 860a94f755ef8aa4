"""Command line for circuits (wired in by main.py): attribution graphs and the transcoders behind them.

monosemantic train --model builtin --transcoder --hookpoint 'layers.*.mlp' --k 32 --tokens 2M --out runs/tc
monosemantic eval-transcoders runs/tc            # per-layer FVU, CE recovered, KL; next-token agreement
monosemantic trace runs/tc "47 + 35 = " --target 8
    -> runs/tc/graphs/47_35_8.json (nodes, edges, scores, settings) and the top paths, printed
monosemantic check-graphs runs/tc --prompts 24   # graphs vs real ablations -> runs/tc/graphs/check.json
monosemantic export-transcoders runs/tc out/ct    # circuit-tracer's layout: config.yaml + layer_L.safetensors
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from monosemantic.atomic import atomic_write_json
from monosemantic.config import add_arguments, from_args, parse_int

GRAPHS_DIR = "graphs"
EVAL_FILE = "transcoder_eval.json"


def graph_name(prompt: str, target: str | None) -> str:
    slug = re.sub(r"[^0-9A-Za-z]+", "_", f"{prompt} {target or ''}").strip("_")
    return slug[:60] or "graph"


def cmd_trace(args: argparse.Namespace) -> int:
    """Build the attribution graph of a prompt for a target token with the run's transcoders (one per
    MLP): direct effects between active features, error nodes, tokens and logits through the frozen
    replacement model, pruned as circuit-tracer prunes; writes RUN/graphs/NAME.json and prints the top paths."""
    from monosemantic.circuits.graph import TraceConfig, describe_node, trace_prompt
    from monosemantic.circuits.transcoders import check_fits, load_transcoder_set
    from monosemantic.models import load_model

    cfg = from_args(TraceConfig, args)
    tset = load_transcoder_set(args.run)
    model, tokenizer = load_model(tset.model)
    check_fits(model, tset.transcoders)
    graph = trace_prompt(model, tokenizer, tset.transcoders, args.prompt, cfg)
    name = args.name or graph_name(args.prompt, args.target)
    out = Path(args.run) / GRAPHS_DIR / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    atomic_write_json(out, graph)
    s, c, t = graph["scores"], graph["counts"], graph["target"]
    print(
        f"graph of {args.prompt!r} -> {t['token']!r} (p={t['probability']:.3f}): {c['kept_nodes']} of {c['nodes']} "
        f"nodes ({c['features']} active features), {c['kept_edges']} edges kept; in {graph['seconds']:.1f} s"
    )
    print(
        f"replacement score {s['replacement']:.3f}, completeness {s['completeness']:.3f} "
        f"(pruned: {s['pruned_replacement']:.3f}, {s['pruned_completeness']:.3f})"
    )
    by_id = {n["id"]: n for n in graph["nodes"]}
    print("top paths (product of normalised edge weights):")
    for path in graph["paths"]:
        print(f"  {path['score']:.4f}  " + " -> ".join(describe_node(by_id[i]) for i in path["nodes"]))
    print(f"wrote {out}")
    return 0


def cmd_check_graphs(args: argparse.Namespace) -> int:
    """Check attribution graphs against interventions in the real model: on held-out problems, ablate
    each graph's top feature nodes and as many random active features one at a time, and correlate
    the real change of the target logit with the graph's prediction (total and direct effect); mean
    correlation over prompts with bootstrap 95% CIs. Writes RUN/graphs/check.json, prints the table."""
    from monosemantic.circuits.check import CheckConfig, check_graphs, format_table
    from monosemantic.circuits.transcoders import check_fits, load_transcoder_set
    from monosemantic.models import load_model

    cfg = from_args(CheckConfig, args)
    tset = load_transcoder_set(args.run)
    model, tokenizer = load_model(tset.model)
    check_fits(model, tset.transcoders)
    result = check_graphs(model, tokenizer, tset.transcoders, cfg, progress=not args.quiet)
    out = Path(args.run) / GRAPHS_DIR / "check.json"
    out.parent.mkdir(exist_ok=True)
    atomic_write_json(out, result)
    print(format_table(result))
    print(f"wrote {out}")
    return 0


def cmd_export_transcoders(args: argparse.Namespace) -> int:
    """Export a run's transcoders (one per MLP) in circuit-tracer's layout: OUT/config.yaml and
    OUT/layer_L.safetensors. circuit-tracer 0.5.0 loads per-layer transcoders with ReLU (or JumpReLU);
    ours are TopK: set each loaded transcoder's activation_function to its TopK(k) (config.yaml has k)."""
    from monosemantic.circuits.export import export_circuit_tracer
    from monosemantic.circuits.transcoders import load_transcoder_set

    tset = load_transcoder_set(args.run)
    config = export_circuit_tracer(tset, args.out, args.model_name)
    k = tset.transcoders[0].cfg.k
    print(f"wrote {config} and {config.parent}/layer_*.safetensors")
    print(
        "circuit-tracer's loader applies ReLU: after loading, set "
        f"`tc.activation_function = TopK({k})` on each (circuit_tracer.transcoder.activation_functions.TopK)"
    )
    return 0


def cmd_eval_transcoders(args: argparse.Namespace) -> int:
    """Measure a run's transcoders (one per MLP) on held-out text: per layer FVU and NMSE of the MLP's
    output, L0, CE loss recovered and KL with it spliced in; all at once: CE recovered, KL and the
    replacement model's next-token agreement with the model. Writes RUN/transcoder_eval.json."""
    from monosemantic.circuits.evaluate import evaluate_transcoders
    from monosemantic.circuits.transcoders import load_transcoder_set
    from monosemantic.data.corpora import open_corpus
    from monosemantic.eval.splice import default_eval_corpus
    from monosemantic.models import load_model

    tset = load_transcoder_set(args.run)
    corpus = args.corpus or default_eval_corpus(tset.corpus)
    model, tokenizer = load_model(tset.model)
    result = evaluate_transcoders(
        model, tokenizer, tset.transcoders, open_corpus(corpus), args.tokens, progress=not args.quiet
    )
    atomic_write_json(Path(args.run) / EVAL_FILE, {"corpus": corpus, "metrics": result.to_dict()})
    print(f"{result.n_tokens} tokens of {corpus}; CE clean {result.ce_clean:.4f}")
    print("layer    FVU    NMSE     L0  CE recovered      KL")
    for r in result.layers:
        print(
            f"{r.layer:5d} {r.fvu:6.3f} {r.normalized_mse:7.3f} {r.l0:6.1f} "
            f"{r.ce_loss_recovered:13.3f} {r.kl_spliced:7.4f}"
        )
    print(
        f"all at once: CE {result.ce_all_spliced:.4f} (all MLPs zero-ablated {result.ce_all_zero_ablated:.4f}), "
        f"CE recovered {result.ce_loss_recovered_all:.3f}, KL {result.kl_all_spliced:.4f}, "
        f"next-token agreement {result.next_token_agreement:.1%}"
    )
    return 0


def add_trace_commands(sub, command) -> None:
    """`trace` and `eval-transcoders`."""
    from monosemantic.circuits.check import CheckConfig
    from monosemantic.circuits.graph import TraceConfig

    p = command(sub, "trace", cmd_trace)
    p.add_argument("run", metavar="RUN", help="directory of `train --transcoder --hookpoint 'layers.*.mlp'`")
    p.add_argument("prompt", metavar="PROMPT", help="text whose next token the graph explains")
    p.add_argument("--name", default=None, metavar="NAME", help="graph file name (default: from the prompt and target)")
    add_arguments(p, TraceConfig)

    p = command(sub, "check-graphs", cmd_check_graphs)
    p.add_argument("run", metavar="RUN", help="directory of `train --transcoder --hookpoint 'layers.*.mlp'`")
    add_arguments(p, CheckConfig)

    p = command(sub, "export-transcoders", cmd_export_transcoders)
    p.add_argument("run", metavar="RUN", help="directory of `train --transcoder --hookpoint 'layers.*.mlp'`")
    p.add_argument("out", metavar="OUT", help="directory to write config.yaml and layer_L.safetensors into")
    p.add_argument(
        "--model-name", default=None, metavar="NAME", help="config.yaml's model_name (default: the run's model)"
    )

    p = command(sub, "eval-transcoders", cmd_eval_transcoders)
    p.add_argument("run", metavar="RUN", help="directory of `train --transcoder --hookpoint 'layers.*.mlp'`")
    p.add_argument("--tokens", type=parse_int, default=20_000, metavar="INT", help="held-out tokens to measure on")
    p.add_argument(
        "--corpus",
        default=None,
        metavar="CORPUS",
        help="text to measure on (default: the held-out split of the training corpus)",
    )
