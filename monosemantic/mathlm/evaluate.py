"""Greedy exact-match answer accuracy of a language model on the held-out math corpus, per category.

A sample counts as solved when greedy decoding from its prompt (the text before the answer)
produces exactly the rest of the sample (answer plus closing punctuation) and then ends (EOS).
Prompts of equal length are decoded together, so no padding enters the model.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch

from monosemantic.data.corpora import prompt_ids
from monosemantic.mathlm.corpus import CATEGORIES, MathCorpus, Sample


@dataclass
class CategoryScore:
    category: str
    n: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")


def heldout_samples(per_category: int, seed: int = 0, max_documents: int = 2_000_000) -> list[Sample]:
    """Up to `per_category` held-out samples of each category, in corpus order."""
    counts = dict.fromkeys(CATEGORIES, 0)
    chosen = []
    for i, sample in enumerate(MathCorpus("heldout", seed=seed).documents()):
        if counts[sample.category] < per_category:
            counts[sample.category] += 1
            chosen.append(sample)
        if i >= max_documents or min(counts.values()) >= per_category:
            break
    return chosen


@torch.no_grad()
def greedy_complete(model, tokenizer, prompts: list[str], max_new: int, batch_size: int = 256) -> list[str]:
    """Greedy continuations (until EOS or `max_new` tokens) of each prompt."""
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    limit = model.config.max_position_embeddings if hasattr(model.config, "max_position_embeddings") else 10**9
    out: list[str] = [""] * len(prompts)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_length[len(ids)].append(i)
    for length, members in by_length.items():
        for start in range(0, len(members), batch_size):
            idx = members[start : start + batch_size]
            ids = torch.tensor([encoded[i] for i in idx], device=device)
            done = torch.zeros(len(idx), dtype=torch.bool, device=device)
            new = []
            for _ in range(min(max_new, limit - length)):
                nxt = model(input_ids=ids).logits[:, -1].argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, eos if eos is not None else 0), nxt)
                new.append(nxt)
                done |= nxt == eos
                ids = torch.cat([ids, nxt[:, None]], dim=1)
                if bool(done.all()):
                    break
            gen = torch.stack(new, 1).tolist() if new else [[] for _ in idx]
            for i, tokens in zip(idx, gen):
                if eos in tokens:
                    tokens = tokens[: tokens.index(eos)]
                out[i] = tokenizer.decode(tokens, skip_special_tokens=True)
    return out


def answer_accuracy(model, tokenizer, per_category: int = 200, seed: int = 0) -> list[CategoryScore]:
    """Per-category greedy exact-match accuracy on held-out samples, sorted by category."""
    samples = heldout_samples(per_category, seed)
    max_new = max(len(s.completion) for s in samples) + 2
    was_training = model.training
    model.eval()
    try:
        completions = greedy_complete(model, tokenizer, [s.prompt for s in samples], max_new)
    finally:
        model.train(was_training)
    scores: dict[str, CategoryScore] = {}
    for sample, got in zip(samples, completions):
        score = scores.setdefault(sample.category, CategoryScore(sample.category, 0, 0))
        score.n += 1
        score.correct += int(got == sample.completion)
    return [scores[c] for c in sorted(scores)]


def format_scores(scores: list[CategoryScore]) -> str:
    lines = [f"{'category':<12} {'n':>5} {'accuracy':>9}", "-" * 28]
    for s in scores:
        lines.append(f"{s.category:<12} {s.n:>5} {s.accuracy:>9.1%}")
    total_n, total_c = sum(s.n for s in scores), sum(s.correct for s in scores)
    lines.append("-" * 28)
    lines.append(f"{'all':<12} {total_n:>5} {total_c / total_n:>9.1%}")
    return "\n".join(lines)
