"""Greedy exact-match answer accuracy of a language model on the held-out math corpus, per category.

A sample counts as solved when greedy decoding from its prompt (the text before the answer)
produces exactly the rest of the sample (answer plus closing punctuation) and then ends (EOS).
The decoder is `models.greedy_complete`: prompts of equal length are decoded together, so no
padding enters the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from monosemantic.mathlm.corpus import CATEGORIES, MathCorpus, Sample
from monosemantic.models import greedy_complete


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
