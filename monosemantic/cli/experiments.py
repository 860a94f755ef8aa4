"""Command line for causal experiments: `ablate`, `steer` and `locate` (wired in by cli/main.py).

monosemantic ablate runs/demo --label '=' --task equality --positions relation --bound
monosemantic ablate runs/demo --features 12,345 --task my_tasks.jsonl --mode zero
monosemantic steer runs/demo --feature 600 --alpha=-0.5..0.5 --steps 3 --generate "12 + 7 = "
monosemantic steer runs/demo --feature 123 --alpha=0..8 --steps 5 --task relation_approximate --answers
monosemantic locate --model builtin --task relation --positions relation --positions answer_start
"""

from __future__ import annotations

import argparse
import re
import tempfile
import unicodedata
from pathlib import Path

from monosemantic.atomic import write_error
from monosemantic.cli.progress import say
from monosemantic.config import positive_int
from monosemantic.experiments.ablate import ablate
from monosemantic.experiments.interventions import steer as steer_latent
from monosemantic.experiments.locate import DEFAULT_HOOKPOINTS, locate
from monosemantic.experiments.positions import parse_positions
from monosemantic.experiments.scoring import AFTER_BOS, METRICS, save_json
from monosemantic.experiments.steer import side_by_side, steer, steer_answers
from monosemantic.experiments.tasks import BUILTIN_TASKS
from monosemantic.runmodel import RunModel

EXPERIMENTS_DIR = "experiments"
POSITIONS_HELP = (
    "all (after BOS), prompt, answer_start (the prompt's last token), answer, or a token role with optional "
    "attributes: relation, relation|relation_word, relation:exact=true, space:where=after_relation"
)
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


def position_spec(text: str) -> str:
    """A position set, checked when the command line is read (see experiments/positions.py)."""
    try:
        return parse_positions(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def hookpoint_list(text: str) -> list[str]:
    return [h.strip() for h in text.split(",") if h.strip()]


def spelled(text: str) -> str:
    """`text` safe in a file name, symbols by their Unicode names: '=' -> 'equals-sign' (was 'u3d')."""
    named = re.sub(
        r"[^A-Za-z0-9_.-]",
        lambda m: f"-{unicodedata.name(m.group(), f'u{ord(m.group()):x}').lower().replace(' ', '-')}-",
        text,
    )
    return re.sub("-{2,}", "-", named).strip("-")


def ablation_name(mode: str, task: str, label: str | None, features: list[int] | None) -> str:
    """What an ablation's result files are called: ablate_mean_label-equals-sign_equality."""
    what = f"label-{spelled(label)}" if label else "features-" + "-".join(map(str, features or []))
    return f"ablate_{mode}_{what}_{spelled(task)}"


def _experiments_dir(run_dir: str) -> Path:
    """RUN_DIR/experiments, made if missing; one that cannot be written is refused (called before an
    experiment's minutes of work, not after)."""
    out = Path(run_dir) / EXPERIMENTS_DIR
    try:
        out.mkdir(exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        raise write_error(out, e) from e
    return out


def _out(run_dir: str, name: str) -> Path:
    return _experiments_dir(run_dir) / spelled(name)


def cmd_ablate(args: argparse.Namespace) -> int:
    """Ablate features on a task set at every position after BOS, where they fire and at the named
    --positions, against random features of similar density (--controls draws: mean, sd and CI) and,
    with --bound, against the whole activation replaced by its mean there; prints the table and writes
    RUN_DIR/experiments/NAME.json and NAME.png."""
    _experiments_dir(args.run_dir)
    result = ablate(
        args.run_dir,
        args.features,
        label=args.label,
        task=args.task,
        mode=args.mode,
        n=args.n,
        controls=args.controls,
        positions=args.positions or [],
        bound=args.bound,
        mean_documents=args.mean_documents,
        seed=args.seed,
        max_features=args.max_features,
        min_precision=args.min_precision,
        device=args.device,
        progress=not args.quiet,
    )
    print(result.table())
    name = args.name or ablation_name(args.mode, result.task, args.label, args.features)
    base = _out(args.run_dir, name)
    save_json(base.with_suffix(".json"), result.to_dict())
    print(f"wrote {base.with_suffix('.json')} and {result.plot(base.with_suffix('.png'))}")
    return 0


def cmd_steer(args: argparse.Namespace) -> int:
    """Steer a feature: a dose-response curve of the target token's probability and the KL against
    alpha (PNG + JSON in RUN_DIR/experiments); with --answers, where the task's greedy answers go
    (target, contrast, other: on the relation tasks, exact or rounded) per alpha; with --generate the
    greedy continuation of a prompt without and with steering."""
    lo, hi = args.alpha
    alphas = [lo + (hi - lo) * i / max(args.steps - 1, 1) for i in range(args.steps)] if hi > lo else [lo]
    _experiments_dir(args.run_dir)
    # what the curve and the answers share: the feature, the alphas, the task's prompts and positions
    shared = dict(task=args.task, n=args.n, positions=args.positions, seed=args.seed, device=args.device)
    result = steer(args.run_dir, args.feature, alphas, target=args.target, progress=not args.quiet, **shared)
    print(result.table())
    base = _out(args.run_dir, args.name or f"steer_{args.feature}_{args.task}")
    saved = result.to_dict()
    if args.answers:
        shift = steer_answers(args.run_dir, args.feature, alphas, progress=not args.quiet, **shared)
        print(shift.table())
        saved["answers"] = shift.to_dict()["answers"]
    save_json(base.with_suffix(".json"), saved)
    print(f"wrote {base.with_suffix('.json')} and {result.plot(base.with_suffix('.png'))}")
    if args.generate is not None:
        say(args, f"generating from {args.generate!r} without and with steering ...")
        run = RunModel.of_run(args.run_dir, device=args.device)
        print(f"prompt {args.generate!r}")
        for k, alpha in enumerate(sorted({lo, hi})):
            before, after = side_by_side(
                run.model,
                run.tokenizer,
                run.sae,
                [steer_latent(args.feature, alpha, positions=AFTER_BOS)],
                args.generate,
                args.max_new,
            )
            if k == 0:  # the same continuation at every alpha: once
                print(f"  {'without steering:':<18}{before!r}")
            print(f"  {f'alpha = {alpha:g}:':<18}{after!r}")
    return 0


def cmd_locate(args: argparse.Namespace) -> int:
    """Where a task's information is: the ablation bound (the whole activation replaced by its mean) at
    each hookpoint and position set, before any SAE; prints one table per metric shown (--metric)."""
    result = locate(
        args.model,
        task=args.task,
        hookpoints=args.hookpoints,
        positions=args.positions,
        n=args.n,
        corpus=args.corpus,
        mean_documents=args.mean_documents,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    for metric in args.metric or ["greedy"]:
        print(result.table(metric))
    if args.json:
        save_json(args.json, result.to_dict())
        print(f"wrote {args.json}")
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
    p.add_argument(
        "--controls",
        type=positive_int,
        default=10,
        metavar="INT",
        help="draws of as many random features of similar density (their effect's mean, sd and CI)",
    )
    p.add_argument(
        "--positions",
        action="append",
        type=position_spec,
        default=None,
        metavar="SPEC",
        help="also ablate only at these positions (repeatable; 'all' and 'firing', where the features fire, "
        f"always run): {POSITIONS_HELP}",
    )
    p.add_argument(
        "--bound",
        action="store_true",
        help="also replace the whole activation at the hookpoint by its mean at the positions the "
        "ablation touches: the most any features there are expected to cost (error term kept)",
    )
    p.add_argument(
        "--mean-documents",
        type=positive_int,
        default=1000,
        metavar="INT",
        help="with --bound: the activation's mean is over the first INT documents of the run's corpus",
    )
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
    p.add_argument(
        "--positions",
        type=position_spec,
        default="all",
        metavar="SPEC",
        help=f"where to add the direction: firing (where the feature fires), {POSITIONS_HELP}",
    )
    p.add_argument(
        "--answers",
        action="store_true",
        help="also score the greedy answers per alpha: the share that is the target, the contrast (on the "
        "relation tasks: the other relation's answer, exact or rounded), or neither",
    )
    p.add_argument("--max-new", type=positive_int, default=20, metavar="INT", help="tokens to generate")
    p.add_argument("--name", default=None, metavar="NAME", help="name of the output files in RUN_DIR/experiments")
    p.add_argument("--seed", type=int, default=0, metavar="INT", help="seed of the task items")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run the model on")

    p = command(sub, "locate", cmd_locate)
    p.add_argument("--model", default="builtin", metavar="PATH", help="model directory, or 'builtin'")
    p.add_argument("--task", default="equality", metavar="TASK", help=tasks)
    p.add_argument(
        "--hookpoints",
        type=hookpoint_list,
        default=",".join(DEFAULT_HOOKPOINTS),
        metavar="LIST",
        help="comma-separated hookpoints or globs; the default is the embedding and every layer's residual stream",
    )
    p.add_argument(
        "--positions",
        action="append",
        type=position_spec,
        default=None,
        metavar="SPEC",
        help="position sets, one per column (repeatable; default: all, prompt, answer_start, answer and, on "
        f"built-in tasks, relation|relation_word): {POSITIONS_HELP}",
    )
    p.add_argument(
        "--metric",
        action="append",
        choices=list(METRICS),
        default=None,
        help="metric of the printed tables (repeatable; default greedy: answer accuracy); the JSON has all",
    )
    p.add_argument("--n", type=positive_int, default=200, metavar="INT", help="task items (built-in tasks)")
    p.add_argument("--corpus", default="mathlm", metavar="SPEC", help="the text the activations' means are taken over")
    p.add_argument(
        "--mean-documents", type=positive_int, default=1000, metavar="INT", help="documents of --corpus for the means"
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write every metric's table to this JSON file")
    p.add_argument("--seed", type=int, default=0, metavar="INT", help="seed of the task items")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run the model on")
