"""The relation task's problems: the same operands written with `=` and with `≈`.

The corpus writes additions and subtractions of 2- and 3-digit numbers both ways (`problems.arithmetic`:
`347 + 589 = 936`, and as an estimate to the nearest ten, `347 + 589 ≈ 940`), so on these problems
the relation alone says which answer comes next. A pair is two corpus samples built as that generator
builds them (symbol operators, the same spans and roles), kept when

- the exact result and the rounded one differ, neither a prefix of the other (so greedy answers tell
  them apart), and
- both prompts fall in the held-out split (the split hashes the prompt, relation included: the model
  saw neither problem in training, with either relation).

Operands are drawn as the generator draws them (3-digit problems three times as often as 2-digit, the
second operand one digit shorter a third of the time, subtraction never negative).
"""

from __future__ import annotations

import functools
import random
from decimal import ROUND_HALF_UP, Decimal

from monosemantic.errors import MonosemanticError
from monosemantic.mathlm.corpus import split_of
from monosemantic.mathlm.sample import OPERATOR_SYMBOLS, Builder, Role, Sample

ANSWER_KINDS = {"=": ("exact", "rounded"), "≈": ("rounded", "exact")}
"""relation -> (what its target is, what its contrast is)"""
MAX_TRIES_PER_PAIR = 5000  # about 1 in 400 draws has both prompts held out


class RelationTaskError(MonosemanticError, ValueError):
    """The relation task cannot be built as asked."""


def nearest_ten(value: int) -> int:
    """The estimate the corpus writes after `≈`: the nearest ten, halves up (935 -> 940)."""
    return int(Decimal(value).quantize(Decimal("1E1"), ROUND_HALF_UP))


def statement(x: int, op: str, y: int, exact: bool, index: int = -1) -> Sample:
    """`x op y = result` (exact) or `x op y ≈ nearest ten` as a sample with its roles."""
    result = x + y if op == "add" else x - y
    answer = result if exact else nearest_ten(result)
    b = Builder(random.Random(0))  # the builder draws only for ASCII operators, which are not used here
    b.digits(str(x), "operand_digit", operation=op, operand=1).space("before_operator")
    b.add(OPERATOR_SYMBOLS[op], Role("operator", op, form="symbol"))
    b.space("after_operator").digits(str(y), "operand_digit", operation=op, operand=2).relation(exact, op)
    b.answer(lambda: b.digits(str(answer), "answer_digit", operation=op, operand=0, exact=exact))
    category = f"{op}_{max(len(str(x)), len(str(y)))}d" if exact else "estimate"
    return Sample(index, b.text, category, op, "symbols", exact, b.answer_start, b.answer_end, "symbol", tuple(b.spans))


def _operands(rng: random.Random) -> tuple[int, str, int]:
    n = rng.choices([2, 3], weights=[8, 24])[0]  # the weights of add_2d/sub_2d and add_3d/sub_3d
    op = rng.choice(["add", "sub"])
    m = rng.choice([n, n, n - 1])
    x, y = rng.randint(10 ** (n - 1), 10**n - 1), rng.randint(0 if m == 1 else 10 ** (m - 1), 10**m - 1)
    return (y, op, x) if op == "sub" and y > x else (x, op, y)


def _heldout(prompt: str) -> bool:
    """Whether the corpus' split puts this prompt (symbol operators) in the held-out split."""
    return split_of(Sample(0, prompt, "", "", "", True, len(prompt), len(prompt))) == "heldout"


@functools.cache  # ablate, steer and locate ask for the same pairs; finding them takes a moment
def relation_pairs(n: int, seed: int = 0) -> tuple[tuple[Sample, Sample], ...]:
    """`n` distinct problems, each as its (`=` sample, `≈` sample); a pure function of (n, seed)."""
    rng = random.Random(f"monosemantic relation task {seed}")
    pairs: list[tuple[Sample, Sample]] = []
    seen: set[tuple[int, str, int]] = set()
    for _ in range(MAX_TRIES_PER_PAIR * n):
        if len(pairs) == n:
            break
        x, op, y = problem = _operands(rng)
        exact = str(x + y if op == "add" else x - y)
        rounded = str(nearest_ten(int(exact)))
        if problem in seen or exact.startswith(rounded) or rounded.startswith(exact):
            continue
        seen.add(problem)
        if all(_heldout(f"{x} {OPERATOR_SYMBOLS[op]} {y} {rel} ") for rel in ANSWER_KINDS):
            k = len(pairs)
            pairs.append((statement(x, op, y, True, -1 - 2 * k), statement(x, op, y, False, -2 - 2 * k)))
    if len(pairs) < n:
        raise RelationTaskError(f"found only {len(pairs)} held-out problems for the relation task; ask for fewer")
    return tuple(pairs)
