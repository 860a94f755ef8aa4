"""How often each feature of a run fires on the relation and operator tokens of held-out math text, by
form and language: the numbers of examples/equality_ablation.md that `monosemantic feature` does not
print (how often an `=` feature fires on `≈`; a division feature's recall on each language's word).

    python examples/relation_firing.py RUN_DIR [--tokens 30000] [--features 35,206]

Reads the held-out, de-duplicated documents as the labelling benchmark does (`eval/concept_bench.py`).
Precision is P(group | fires), recall P(fires | group), over the tokens read.
"""

from __future__ import annotations

import argparse
import collections

import torch

from monosemantic.data.corpora import kept_tokens, open_corpus, pack
from monosemantic.eval.concept_bench import _documents
from monosemantic.eval.splice import default_eval_corpus
from monosemantic.hooks import run_and_capture
from monosemantic.runmodel import RunModel


def groups(roles: list, p: int) -> list[str]:
    """The groups token `p` belongs to: `=` / `≈` by form and language, operators by operation and form."""
    if roles[p] is None:
        return []
    d = dict(roles[p])
    lang = f":{d.get('language')}" if d.get("form") == "word" else ""
    if d["kind"] == "relation":
        return [f"relation {d.get('exact')}", f"relation {d.get('exact')} {d.get('form')}{lang}"]
    if d["kind"] == "operator":
        return [f"{d['operation']}", f"{d['operation']} {d.get('form')}{lang}"]
    return []


def count(run_dir: str, tokens: int) -> tuple[int, torch.Tensor, collections.Counter, dict]:
    run = RunModel.of_run(run_dir)
    corpus = open_corpus(default_eval_corpus(run.corpus_spec))
    roles: dict[int, list] = {}
    fires, seen = torch.zeros(run.sae.d_sae), 0
    support: collections.Counter[str] = collections.Counter()
    joint: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for batch in pack(_documents(corpus, run.tokenizer, roles), run.tokenizer, run.seq_len, 4096):
            keep = kept_tokens(batch, run.tokenizer)
            x = run_and_capture(run.model, batch.input_ids, [run.hook], batch.attention_mask)[run.hook.name][keep]
            on = run.sae.encode(x.float().cpu()) > 0  # [tokens, d_sae]
            fires += on.sum(0)
            for row, (d, p) in enumerate(zip(batch.doc_ids[keep].tolist(), batch.positions[keep].tolist())):
                for g in groups(roles[d], p):
                    support[g] += 1
                    joint[g] = joint.get(g, torch.zeros(run.sae.d_sae)) + on[row]
            seen += int(keep.sum())
            if seen >= tokens:
                break
    return seen, fires, support, joint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--tokens", type=int, default=30_000)
    ap.add_argument("--features", default="", help="comma-separated features to show (default: the best of each group)")
    args = ap.parse_args()
    seen, fires, support, joint = count(args.run_dir, args.tokens)
    chosen = [int(f) for f in args.features.split(",") if f]
    print(f"{seen} held-out tokens")
    for g in sorted(support):
        p, r = joint[g] / fires.clamp(min=1), joint[g] / support[g]
        f = chosen or [int((2 * p * r / (p + r).clamp(min=1e-9)).argmax())]
        print(f"{g:34s} n={support[g]:5d}  " + "  ".join(f"#{i}: P {p[i]:.2f} R {r[i]:.2f}" for i in f))


if __name__ == "__main__":
    main()
