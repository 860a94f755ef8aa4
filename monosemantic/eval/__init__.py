"""Evaluation: how good is an SAE (and how much does the model lean on each of its layers)?

metrics.py       pure tensor metrics (FVU, normalised MSE, L0, dead / dense, MMCS) and `evaluate`
splice.py        the SAE spliced into its model: CE loss recovered, KL; `evaluate_run`
layer_ablation.py  the model itself: CE cost of zero- and mean-ablating each attention and MLP sublayer
toy.py           synthetic superposition data with known features: recovery (MMCS)
probing.py       sparse and linear probes
splitting.py     feature splitting between SAEs of different widths
concept_bench.py the labelling benchmark: concept recall against token roles, SAE beside neurons
benchmark.py     the benchmark suite over one run or a sweep
report.py        the benchmark report (report.md, report.html)
tables.py        result tables for the terminal
"""
