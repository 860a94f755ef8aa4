"""Causal experiments: intervene on features inside the running model and measure what changes.

interventions.py zero / mean-ablate / clamp / steer latents with the error term kept
tasks.py         task sets: prompts with the target the model should produce
relation.py      the relation task's problems: the same operands after `=` and after `≈`
scoring.py       per-item scores, bootstrap confidence intervals, feature selection
positions.py     position sets (all, firing, answer_start, token roles, ...) and scoring at them
controls.py      random features of similar density, and the spread of their effect over draws
bound.py         the ablation bound: the whole activation replaced by its mean
ablate.py        ablation studies at several position sets, against controls and the bound
locate.py        the bound per hookpoint and position set: where a task's information is
report.py        the text tables of ablate and locate
steer.py         steering: dose-response curves, where the answers go, side-by-side generations
"""
