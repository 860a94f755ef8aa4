"""The built-in math corpus: short, checkable math texts in symbols, English, Spanish and French,
every character of which carries its role from the generator.

Sample `i` of a corpus is a pure function of (seed, i). Every sample carries document metadata
(category, operation, language, exact `=` or approximate `≈`, the operator's form, the answer's
span) and **token roles**: the text is built from spans, each with a `Role` (operand digit with its
operand and place value, operator and operation, relation exact or approximate, answer digit, number
word with its value and language, name, object, the spaces around a relation, ...); `token_roles`
maps them onto a tokenizer's tokens. The held-out split is decided by a hash of the *problem* (the
prompt with ASCII operators written as symbols), so no problem appears in both splits in any form.

    for doc in MathCorpus("train", seed=0).documents(limit=3): print(doc.text)
    # 347 + 589 = 936
    # veintidós menos tres es igual a diecinueve
    # 22 ÷ 7 ≈ 3.14
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator

from monosemantic.mathlm.problems import CATEGORIES, ESTIMATE_SHARE, GENERATORS
from monosemantic.mathlm.sample import (
    ASCII_ALIASES,
    DIVIDE,
    MINUS,
    OPERATION_NAMES,
    OPERATOR_SYMBOLS,
    TIMES,
    Role,
    Sample,
    Span,
)

__all__ = [  # the corpus' public names, wherever they are defined
    "ASCII_ALIASES",
    "CATEGORIES",
    "DEFAULT_WEIGHTS",
    "DIVIDE",
    "ESTIMATE_SHARE",
    "GENERATORS",
    "HELDOUT_PERCENT",
    "MINUS",
    "OPERATION_NAMES",
    "OPERATOR_SYMBOLS",
    "TIMES",
    "MathCorpus",
    "Role",
    "Sample",
    "Span",
    "generate",
    "mixture_weights",
    "split_of",
    "token_roles",
]

HELDOUT_PERCENT = 5


def _seeded(seed: int, purpose: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"mathlm:{purpose}:{seed}".encode()).digest()[:8], "little"))


DEFAULT_WEIGHTS = tuple(weight for _, weight in GENERATORS.values())


def mixture_weights(mixture: dict[str, float] | None) -> tuple[float, ...]:
    """The generators' weights with `mixture`'s overrides ({"add_3d": 60}); unknown names are errors."""
    if not mixture:
        return DEFAULT_WEIGHTS
    unknown = sorted(set(mixture) - set(GENERATORS))
    if unknown:
        raise ValueError(f"unknown corpus generator(s) {', '.join(unknown)}; expected some of {', '.join(GENERATORS)}")
    if any(not (w >= 0 and math.isfinite(w)) for w in mixture.values()):
        raise ValueError(f"generator weights must be finite and >= 0, got {mixture}")
    return tuple(mixture.get(name, weight) for name, (_, weight) in GENERATORS.items())


def generate(seed: int, index: int, weights: tuple[float, ...] = DEFAULT_WEIGHTS) -> Sample:
    """Sample number `index` of the corpus with this seed (a pure function of seed, index, weights)."""
    rng = _seeded(seed, f"sample-{index}")
    fns = [fn for fn, _ in GENERATORS.values()]
    (b, category, operation, exact), language = rng.choices(fns, weights=weights)[0](rng)
    return Sample(
        index, b.text, category, operation, language, exact, b.answer_start, b.answer_end, b.form, tuple(b.spans)
    )


def split_of(sample: Sample) -> str:
    """'heldout' for about HELDOUT_PERCENT% of distinct problems, by a hash of the canonical prompt."""
    h = int.from_bytes(hashlib.sha256(sample.canonical_prompt().encode()).digest()[:4], "little")
    return "heldout" if h % 100 < HELDOUT_PERCENT else "train"


def token_roles(sample: Sample, tokenizer) -> list[Role]:
    """The role of every token of `sample` as the model reads it (BOS first, EOS last when the
    tokenizer has them): a token's role is the role of the span its first character lies in."""
    enc = tokenizer(sample.text, add_special_tokens=False, return_offsets_mapping=True)
    roles = [sample.role_at(start) for start, _ in enc["offset_mapping"]]
    if tokenizer.bos_token_id is not None:
        roles.insert(0, Role("bos"))
    if tokenizer.eos_token_id is not None:
        roles.append(Role("eos"))
    return roles


class MathCorpus:
    """The documents of one split, in index order; `documents(start=i)` resumes at index i."""

    def __init__(self, split: str = "train", seed: int = 0, mixture: dict[str, float] | None = None):
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        self.split, self.seed, self.mixture = split, seed, dict(mixture or {})
        self.weights = mixture_weights(self.mixture)

    def documents(self, start: int = 0, limit: int | None = None) -> Iterator[Sample]:
        index, produced = start, 0
        while limit is None or produced < limit:
            sample = generate(self.seed, index, self.weights)
            index += 1
            if split_of(sample) == self.split:
                produced += 1
                yield sample

    def sample(self, doc_id: int) -> Sample:
        """Document `doc_id` (its index in the stream), e.g. to read the roles of a harvested token."""
        return generate(self.seed, doc_id, self.weights)

    def describe(self) -> dict:
        return {
            "kind": "mathlm",
            "split": self.split,
            "seed": self.seed,
            **({"mixture": self.mixture} if self.mixture else {}),
        }
