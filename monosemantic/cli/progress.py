"""What a command is doing before its first progress bar: one line on stderr as it starts.

Loading a model, an SAE or a feature store takes seconds to a minute before any bar can start (the
bar's total is known only once the data is). Every command that loads one says so first, so that no
command is silent for more than a moment (issue 21: `mathlm eval` and `ablate` were silent for
minutes). Commands that only read the feature store and print at once (`feature`, `features`) say
nothing; `eval`, `train` and `view` print their own line (what they load depends on flags).
"""

from __future__ import annotations

import argparse
import sys

# command (as the parser names it; `mathlm eval` is "mathlm eval") -> its first line, formatted with the
# parsed arguments
STARTING = {
    "analyze": "analyze: loading the model, the SAE and the corpus of {run_dir} ...",
    "inspect": "inspect: loading the model, the SAE and the feature store of {run_dir} ...",
    "ablate": "ablate: loading the feature store, the model and the SAE of {run_dir} ...",
    "steer": "steer: loading the feature store, the model and the SAE of {run_dir} ...",
    "locate": "locate: loading the model {model} and the task {task} ...",
    "benchmark": "benchmark: loading the runs, their models and corpora ...",
    "sweep": "sweep: loading the model and the corpus for {out} ...",
    "trace": "trace: loading the transcoders of {run} and their model ...",
    "eval-transcoders": "eval-transcoders: loading the transcoders of {run}, their model and the corpus ...",
    "export": "export: reading the SAE of {run_dir} ...",
    "convert": "convert: reading the SAE in {src} ...",
    "mathlm eval": "mathlm eval: loading the model {model} ...",
    "mathlm ablate-layers": "mathlm ablate-layers: loading the model {model} and the corpus {corpus} ...",
    "mathlm train": "mathlm train: building the corpus and the model in {out} ...",
    "mathlm train-saes": "mathlm train-saes: loading the model and the corpus for {out} ...",
    "bench toy": "bench toy: generating the synthetic data ...",
}


def command_name(args: argparse.Namespace) -> str:
    """'ablate', or 'mathlm eval' for the commands that have actions."""
    sub = getattr(args, "mathlm", None) or getattr(args, "bench", None)
    return f"{args.command} {sub}" if sub else args.command


def announce(args: argparse.Namespace) -> None:
    """Print the command's first line (see STARTING) on stderr, unless --quiet."""
    line = STARTING.get(command_name(args))
    if line and not args.quiet:
        print(line.format_map(vars(args)), file=sys.stderr, flush=True)


def say(args: argparse.Namespace, text: str) -> None:
    """A step of a command, on stderr, unless --quiet."""
    if not args.quiet:
        print(text, file=sys.stderr, flush=True)
