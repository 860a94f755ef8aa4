"""Greedy answer accuracy of a language model on the held-out math corpus, per category, with the
operators written as symbols (`−`, `×`, `÷`) and as ASCII (`-`, `*`, `/`).

Each held-out problem counts once (problems are de-duplicated by their canonical prompt, so the
figures do not count the same text many times). A sample is solved when greedy decoding from its
prompt (the text before the answer) produces exactly the rest of the sample (answer plus closing
punctuation) and then ends (EOS). An approximate answer (`≈`) is solved when it is a number within
one unit of the last digit the corpus states (±0.01 for `22 ÷ 7 ≈ 3.14`, ±10 for the estimate
`347 + 589 ≈ 940`). The decoder is `models.greedy_complete`: prompts of equal length are decoded
together, so no padding enters the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tqdm.auto import tqdm

from monosemantic.mathlm.corpus import CATEGORIES, MINUS, MathCorpus, Sample
from monosemantic.models import greedy_complete

logger = logging.getLogger(__name__)


@dataclass
class CategoryScore:
    category: str
    n: int
    correct: int
    n_ascii: int = 0
    """problems of this category whose operators have an ASCII form (0: none has one)"""
    correct_ascii: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def accuracy_ascii(self) -> float:
        return self.correct_ascii / self.n_ascii if self.n_ascii else float("nan")


def heldout_samples(
    per_category: int, seed: int = 0, max_documents: int = 400_000, progress: bool = False
) -> list[Sample]:
    """Up to `per_category` distinct held-out problems of each category (by canonical prompt), in
    corpus order, each in its symbol form; `progress`: a bar over the documents read (the rare
    categories have few distinct problems, so it often reads all `max_documents`)."""
    counts = dict.fromkeys(CATEGORIES, 0)
    seen: set[str] = set()
    chosen = []
    documents = MathCorpus("heldout", seed=seed).documents()
    with tqdm(total=max_documents, desc="choosing problems", unit="doc", disable=not progress) as bar:
        for sample in documents:
            bar.update()
            key = sample.canonical_prompt()
            if counts[sample.category] < per_category and key not in seen:
                seen.add(key)
                counts[sample.category] += 1
                chosen.append(sample.with_form("symbol"))
            if sample.id >= max_documents or min(counts.values()) >= per_category:
                break
    return chosen


def _unit(sample: Sample) -> float:
    """One unit of the last stated digit: 0.01 for '3.14', 10 for an estimate (the nearest ten)."""
    if sample.category == "estimate":
        return 10.0
    return 10.0 ** -len(sample.answer.split(".")[1]) if "." in sample.answer else 1.0


def _number(text: str) -> float | None:
    try:
        return float(text.strip().replace(MINUS, "-"))
    except ValueError:
        return None


def solved(sample: Sample, got: str) -> bool:
    """Whether a greedy completion `got` solves `sample` (see the module's docstring)."""
    if sample.exact:
        return got == sample.completion
    value, stated = _number(got), float(sample.answer.replace(MINUS, "-"))
    return value is not None and abs(value - stated) <= _unit(sample) + 1e-9


def answer_accuracy(
    model, tokenizer, per_category: int = 200, seed: int = 0, progress: bool = False
) -> list[CategoryScore]:
    """Per-category greedy accuracy on distinct held-out problems, symbol and ASCII forms, sorted by
    category; `progress`: a line, then a bar over the prompts decoded."""
    if progress:
        logger.info("choosing %d distinct held-out problems per category ...", per_category)
    samples = heldout_samples(per_category, seed, progress=progress)
    ascii_forms = [s.with_form("ascii") for s in samples]
    has_ascii = [a.text != s.text for s, a in zip(samples, ascii_forms)]
    runs = samples + [a for a, h in zip(ascii_forms, has_ascii) if h]
    max_new = max(len(tokenizer(s.completion, add_special_tokens=False)["input_ids"]) for s in samples) + 2
    was_training = model.training
    model.eval()
    try:
        completions = greedy_complete(model, tokenizer, [s.prompt for s in runs], max_new, progress=progress)
    finally:
        model.train(was_training)
    scores: dict[str, CategoryScore] = {}
    for sample, got in zip(samples, completions):
        score = scores.setdefault(sample.category, CategoryScore(sample.category, 0, 0))
        score.n += 1
        score.correct += int(solved(sample, got))
    for sample, got in zip([a for a, h in zip(ascii_forms, has_ascii) if h], completions[len(samples) :]):
        score = scores[sample.category]
        score.n_ascii += 1
        score.correct_ascii += int(solved(sample, got))
    return [scores[c] for c in sorted(scores)]


def format_scores(scores: list[CategoryScore]) -> str:
    """A table: category, distinct problems, accuracy with symbols, accuracy with ASCII operators."""
    lines = [f"{'category':<12} {'n':>5} {'symbols':>8} {'n ascii':>8} {'ascii':>7}", "-" * 44]
    for s in scores:
        ascii_cells = f"{s.n_ascii:>8} {s.accuracy_ascii:>7.1%}" if s.n_ascii else f"{'':>8} {'—':>7}"
        lines.append(f"{s.category:<12} {s.n:>5} {s.accuracy:>8.1%} {ascii_cells}")
    total_n, total_c = sum(s.n for s in scores), sum(s.correct for s in scores)
    ascii_n, ascii_c = sum(s.n_ascii for s in scores), sum(s.correct_ascii for s in scores)
    lines.append("-" * 44)
    lines.append(f"{'all':<12} {total_n:>5} {total_c / total_n:>8.1%} {ascii_n:>8} {ascii_c / max(ascii_n, 1):>7.1%}")
    return "\n".join(lines)
