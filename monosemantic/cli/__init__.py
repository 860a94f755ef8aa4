"""The `monosemantic` command: thin subcommands, one module per command group.

entry.py         the console script: on a terminal, a first line before the heavy imports
main.py          the parser, error handling, eval / convert / export / mathlm / bench toy
train.py         train, train-tensors (new, or --resume)
features.py      analyze, feature, features, inspect
experiments.py   ablate, steer
benchmark.py     sweep, benchmark
view.py          view (the dashboard)
"""
