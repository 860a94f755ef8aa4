"""Command line for causal experiments: `ablate` and `steer` (wired in by cli/main.py).

monosemantic ablate runs/demo --label '=' --task equality
monosemantic ablate runs/demo --features 12,345 --task my_tasks.jsonl --mode zero
monosemantic steer runs/demo --feature 123 --alpha=-4..8 --generate "12 + 7 = "
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from monosemantic.config import positive_int
from monosemantic.experiments.ablate import ablate
from monosemantic.experiments.interventions import steer as steer_latent
from monosemantic.experiments.scoring import AFTER_BOS, save_json
from monosemantic.experiments.steer import side_by_side, steer
from monosemantic.experiments.tasks import BUILTIN_TASKS
from monosemantic.runmodel import RunModel

EXPERIMENTS_DIR = "experiments"
MAX_ALPHA = 1000.0


def feature_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected feature ids separated by commas, e.g. 12,345; got {text!r}"
        ) from None


def alpha_range(text: str) -> tuple[float, float]:
    """'-4..8' -> (-4.0, 8.0); a single number is a range of one."""
    number = r"(-?\d+(?:\.\d*)?)"
    m = re.fullmatch(rf"\s*{number}\s*(?:\.\.\s*{number}\s*)?", text)
    try:
        lo = float(m.group(1))
        hi = float(m.group(2)) if m.group(2) else lo
    except (AttributeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected a steering strength or a range such as -4..8, got {text!r}"
        ) from None
    if lo > hi or max(abs(lo), abs(hi)) > MAX_ALPHA:
        raise argparse.ArgumentTypeError(
            f"expected LOW..HIGH with LOW <= HIGH and |alpha| <= {MAX_ALPHA:g}, got {text!r}"
        )
    return lo, hi


def _out(run_dir: str, name: str) -> Path:
    out = Path(run_dir) / EXPERIMENTS_DIR
    out.mkdir(exist_ok=True)
    return out / re.sub(r"[^A-Za-z0-9_.-]", lambda m: f"u{ord(m.group()):x}", name)  # '=' -> u3d


def cmd_ablate(args: argparse.Namespace) -> int:
    """Ablate features on a task set, against as many random features of similar density; prints the
    table and writes RUN_DIR/experiments/NAME.json and NAME.png."""
    result = ablate(
        args.run_dir,
        args.features,
        label=args.label,
        task=args.task,
        mode=args.mode,
        n=args.n,
        controls=args.controls,
        seed=args.seed,
        max_features=args.max_features,
        min_precision=args.min_precision,
        device=args.device,
    )
    print(result.table())
    name = args.name or f"ablate_{args.label or 'features'}_{result.task}_{args.mode}"
    base = _out(args.run_dir, name)
    save_json(base.with_suffix(".json"), result.to_dict())
    print(f"wrote {base.with_suffix('.json')} and {result.plot(base.with_suffix('.png'))}")
    return 0


def cmd_steer(args: argparse.Namespace) -> int:
    """Steer a feature: a dose-response curve of the target token's probability and the KL against
    alpha (PNG + JSON in RUN_DIR/experiments), and with --generate the greedy continuation of a
    prompt without and with steering."""
    lo, hi = args.alpha
    alphas = [lo + (hi - lo) * i / max(args.steps - 1, 1) for i in range(args.steps)] if hi > lo else [lo]
    result = steer(
        args.run_dir,
        args.feature,
        alphas,
        task=args.task,
        n=args.n,
        target=args.target,
        seed=args.seed,
        device=args.device,
    )
    print(result.table())
    base = _out(args.run_dir, args.name or f"steer_{args.feature}_{args.task}")
    save_json(base.with_suffix(".json"), result.to_dict())
    print(f"wrote {base.with_suffix('.json')} and {result.plot(base.with_suffix('.png'))}")
    if args.generate is not None:
        run = RunModel.of_run(args.run_dir, device=args.device)
        for alpha in sorted({lo, hi}):
            before, after = side_by_side(
                run.model,
                run.tokenizer,
                run.sae,
                [steer_latent(args.feature, alpha, positions=AFTER_BOS)],
                args.generate,
                args.max_new,
            )
            print(f"prompt {args.generate!r}\n  without steering: {before!r}\n  alpha = {alpha:g}:{'':>8}{after!r}")
    return 0


def add_experiment_commands(sub, command) -> None:
    tasks = f"task: {', '.join(BUILTIN_TASKS)}, or a .jsonl file of {{prompt, target, contrast}} lines"
    p = command(sub, "ablate", cmd_ablate)
    p.add_argument("run_dir", metavar="RUN_DIR", help="analysed run directory")
    chosen = p.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--features", type=feature_list, metavar="IDS", help="feature ids, e.g. 12,345")
    chosen.add_argument("--label", metavar="TEXT", help="ablate the features whose label mentions TEXT, e.g. '='")
    p.add_argument("--task", default="equality", metavar="TASK", help=tasks)
    p.add_argument(
        "--mode",
        default="mean",
        choices=("mean", "zero"),
        help="set the features to their mean activation over the corpus, or to zero",
    )
    p.add_argument("--n", type=positive_int, default=200, metavar="INT", help="task items (built-in tasks)")
    p.add_argument("--controls", type=positive_int, default=3, metavar="INT", help="random control draws")
    p.add_argument(
        "--max-features", type=positive_int, default=20, metavar="INT", help="at most this many with --label"
    )
    p.add_argument(
        "--min-precision",
        type=float,
        default=0.5,
        metavar="FLOAT",
        help="with --label: only features whose label has at least this held-out precision",
    )
    p.add_argument("--name", default=None, metavar="NAME", help="name of the output files in RUN_DIR/experiments")
    p.add_argument("--seed", type=int, default=0, metavar="INT", help="seed of the control draws and the task items")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run the model on")

    p = command(sub, "steer", cmd_steer)
    p.add_argument("run_dir", metavar="RUN_DIR", help="analysed run directory")
    p.add_argument("--feature", type=int, required=True, metavar="N", help="feature to steer with")
    p.add_argument(
        "--alpha",
        type=alpha_range,
        default=(-4.0, 8.0),
        metavar="LOW..HIGH",
        help="steering strengths (x the unit decoder direction), e.g. --alpha=-4..8 (default)",
    )
    p.add_argument("--steps", type=positive_int, default=13, metavar="INT", help="points of the curve")
    p.add_argument("--task", default="equality", metavar="TASK", help="prompts to steer on; " + tasks)
    p.add_argument("--n", type=positive_int, default=100, metavar="INT", help="prompts")
    p.add_argument(
        "--target",
        default=None,
        metavar="TOKEN",
        help="token whose probability to follow (default: the "
        "token whose mean probability the strongest alpha raises most on the task's prompts)",
    )
    p.add_argument(
        "--generate",
        default=None,
        metavar="PROMPT",
        help="also print the greedy continuation of PROMPT without and with steering (at the lowest and highest alpha)",
    )
    p.add_argument("--max-new", type=positive_int, default=20, metavar="INT", help="tokens to generate")
    p.add_argument("--name", default=None, metavar="NAME", help="name of the output files in RUN_DIR/experiments")
    p.add_argument("--seed", type=int, default=0, metavar="INT", help="seed of the task items")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run the model on")
