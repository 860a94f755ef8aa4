"""Swap the relation at the relation token through the SAE's features: on the `≈` prompts of the relation
task, the `=` features set to their maximum and the `≈` features to 0 (and the reverse on the `=`
prompts); where the greedy answers go (the double dissociation of examples/equality_ablation.md).

    python examples/relation_swap.py RUN_DIR --exact 35,453,306,144 --approximate 17,263,161
"""

from __future__ import annotations

import argparse

import numpy as np

from monosemantic.analysis.store import FeatureStore
from monosemantic.experiments.interventions import Intervention, clamp, intervene
from monosemantic.experiments.positions import parse_positions, resolve, score_at
from monosemantic.experiments.scoring import score
from monosemantic.experiments.tasks import load_task
from monosemantic.runmodel import RunModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--exact", required=True, help="the features that fire on `=`, e.g. 35,453")
    ap.add_argument("--approximate", required=True, help="the features that fire on `≈`")
    ap.add_argument("--n", type=int, default=100, help="problems per task")
    args = ap.parse_args()
    eq, approx = ([int(i) for i in s.split(",")] for s in (args.exact, args.approximate))
    store = FeatureStore.open(args.run_dir)
    run = RunModel.of_run(args.run_dir, store.settings["corpus"], "cpu")
    top = {i: store.feature(i).max_act for i in eq + approx}

    def on(ids: list[int]) -> Intervention:
        return clamp(ids, [top[i] for i in ids])

    def off(ids: list[int]) -> Intervention:
        return clamp(ids, [0.0] * len(ids))

    swaps = {
        "relation_approximate": {
            "'=' on": [on(eq)],
            "'≈' off": [off(approx)],
            "'=' on, '≈' off": [on(eq), off(approx)],
        },
        "relation_exact": {"'≈' on": [on(approx)], "'=' off": [off(eq)], "'≈' on, '=' off": [on(approx), off(eq)]},
    }
    for task_name, conditions in swaps.items():
        task = load_task(task_name, args.n, 0)
        clean, clean_logp = score(run.model, run.tokenizer, task)
        where = resolve(parse_positions("relation"), task, run.tokenizer)
        for name, ops in conditions.items():

            def at(positions, ops=ops):
                return intervene(run.model, run.sae, [clamp(o.latents, o.values, positions) for o in ops])

            s = score_at(run.model, run.tokenizer, task, where, at, clean, clean_logp)
            target, contrast = np.mean(s.greedy), np.mean(np.nan_to_num(s.contrast))
            other = 1 - target - contrast
            print(f"{task_name:21s} {name:17s} target {target:.2f}  contrast {contrast:.2f}  other {other:.2f}")


if __name__ == "__main__":
    main()
