"""The `monosemantic` command: thin subcommands, one module per command group.

main.py          the parser, error handling, train / train-tensors / eval / convert / export / mathlm
features.py      analyze, feature, features, inspect
experiments.py   ablate, steer
benchmark.py     sweep, benchmark
view.py          view (the dashboard)
"""
