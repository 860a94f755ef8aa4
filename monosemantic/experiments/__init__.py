"""Causal experiments: intervene on features inside the running model and measure what changes.

interventions.py zero / mean-ablate / clamp / steer latents with the error term kept
tasks.py         task sets: prompts with the target the model should produce
scoring.py       per-item scores, bootstrap confidence intervals, feature selection
ablate.py        ablation studies against random features of similar density
steer.py         steering: dose-response curves and side-by-side generations
"""
