"""The built-in math corpus: short, checkable math texts in symbols, English, Spanish and French.

Sample `i` of a corpus is a pure function of (seed, i). Every sample carries metadata for probing
and ablation tasks: category, operation, language, whether it states an exact (`=`) or an
approximate (`≈`) result, and the character span of its answer. The held-out split is decided by a
hash of the *problem* (the text before the answer), so a problem never appears in both splits.

    for doc in MathCorpus("train", seed=0).documents(limit=3): print(doc.text)
    # 47 − 19 = 28
    # tres más cuatro es igual a siete
    # x + 3 = 7, x = 4
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

HELDOUT_PERCENT = 5
MINUS, TIMES, DIVIDE = "−", "×", "÷"  # U+2212, U+00D7, U+00F7


@dataclass(frozen=True)
class Sample:
    """One text of the corpus. `text[answer_start:answer_end]` is the answer; what precedes it is the
    prompt of the greedy-answer task."""

    id: int
    text: str
    category: str
    operation: str
    language: str
    exact: bool
    answer_start: int
    answer_end: int

    @property
    def prompt(self) -> str:
        return self.text[: self.answer_start]

    @property
    def answer(self) -> str:
        return self.text[self.answer_start : self.answer_end]

    @property
    def meta(self) -> dict[str, str]:
        """Document properties in words, for labels ("language: Spanish", "operation: division")."""
        return {
            "language": LANGUAGE_NAMES[self.language],
            "operation": OPERATION_NAMES.get(self.operation, self.operation),
            "category": self.category,
            "result": "exact" if self.exact else "approximate",
        }

    @property
    def completion(self) -> str:
        """Everything after the prompt (answer plus closing punctuation, if any)."""
        return self.text[self.answer_start :]


LANGUAGE_NAMES = {"symbols": "symbols", "en": "English", "es": "Spanish", "fr": "French"}
OPERATION_NAMES = {"add": "addition", "sub": "subtraction", "mul": "multiplication", "div": "division"}

WORDS = {
    "en": "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split(),
    "es": "cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince "
    "dieciséis diecisiete dieciocho diecinueve veinte".split(),
    "fr": "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize "
    "dix-sept dix-huit dix-neuf vingt".split(),
}
OPERATOR_WORDS = {  # operation -> language -> (operator word, "equals" phrase)
    "add": {"en": ("plus", "equals"), "es": ("más", "es igual a"), "fr": ("plus", "égale")},
    "sub": {"en": ("minus", "equals"), "es": ("menos", "es igual a"), "fr": ("moins", "égale")},
    "mul": {"en": ("times", "equals"), "es": ("por", "es igual a"), "fr": ("fois", "égale")},
}
NAMES = [
    ("Ana", "f"),
    ("Tom", "m"),
    ("Luis", "m"),
    ("Marie", "f"),
    ("Sam", "m"),
    ("Eva", "f"),
    ("Léo", "m"),
    ("Sofía", "f"),
]
OBJECTS = {
    "en": ["apples", "books", "coins", "cards", "pens"],
    "es": ["manzanas", "libros", "monedas", "cartas", "lápices"],
    "fr": ["pommes", "livres", "pièces", "cartes", "stylos"],
}
PROBLEMS = {  # (language, operation) -> template; {p} is the pronoun
    ("en", "add"): "{name} has {a} {obj} and gets {b} more. {p} has {ANS}.",
    ("en", "sub"): "{name} has {a} {obj} and gives away {b}. {p} has {ANS}.",
    ("es", "add"): "{name} tiene {a} {obj} y recibe {b} más. Tiene {ANS}.",
    ("es", "sub"): "{name} tiene {a} {obj} y regala {b}. Tiene {ANS}.",
    ("fr", "add"): "{name} a {a} {obj} et en reçoit {b} de plus. {p} a {ANS}.",
    ("fr", "sub"): "{name} a {a} {obj} et en donne {b}. {p} a {ANS}.",
}
PRONOUNS = {"en": {"f": "She", "m": "He"}, "fr": {"f": "Elle", "m": "Il"}, "es": {"f": "", "m": ""}}
TRIG_IDENTITIES = [  # (left, right): exact identities in a variable v
    ("sin²({v}) + cos²({v})", "1"),
    ("1 − cos²({v})", "sin²({v})"),
    ("1 − sin²({v})", "cos²({v})"),
    ("2sin({v})cos({v})", "sin(2{v})"),
    ("sin({v})/cos({v})", "tan({v})"),
    ("cos(−{v})", "cos({v})"),
    ("sin(−{v})", "−sin({v})"),
    ("cos²({v}) − sin²({v})", "cos(2{v})"),
]
TRIG_VALUES = [  # (left, right, exact)
    ("sin(0)", "0", True),
    ("cos(0)", "1", True),
    ("sin(π/2)", "1", True),
    ("cos(π)", "−1", True),
    ("sin(π/6)", "1/2", True),
    ("cos(π/3)", "1/2", True),
    ("tan(π/4)", "1", True),
    ("cos(π/2)", "0", True),
    ("sin(π/4)", "0.71", False),
    ("cos(π/6)", "0.87", False),
    ("tan(π/3)", "1.73", False),
]
VARIABLES = ["x", "y", "θ", "a", "t"]


def _number(n: int) -> str:
    return f"{MINUS}{-n}" if n < 0 else str(n)


def _digits(rng: random.Random, n_digits: int) -> int:
    return rng.randint(0 if n_digits == 1 else 10 ** (n_digits - 1), 10**n_digits - 1)


def _statement(left: str, relation: str, answer: str, tail: str = "") -> tuple[str, int, int]:
    text = f"{left} {relation} "
    return text + answer + tail, len(text), len(text) + len(answer)


def arithmetic(rng: random.Random) -> tuple[str, int, int, str, str, bool]:
    op = rng.choices(["add", "sub", "mul", "div"], weights=[20, 18, 6, 4])[0]
    if op in ("add", "sub"):
        n = rng.choices([1, 2, 3], weights=[1, 6, 2])[0]
        a, b = _digits(rng, n), _digits(rng, rng.choice([n, max(1, n - 1)]))
        if op == "sub" and b > a:
            a, b = b, a
        text = _statement(f"{a} {'+' if op == 'add' else MINUS} {b}", "=", str(a + b if op == "add" else a - b))
        return (*text, f"{op}_{max(len(str(a)), len(str(b)))}d", op, True)
    if op == "mul":
        a, b = _digits(rng, rng.choice([1, 2])), _digits(rng, 1)
        return (*_statement(f"{a} {TIMES} {b}", "=", str(a * b)), "mul", op, True)
    b = rng.randint(1, 12)
    q = rng.randint(0, 12 if b > 9 else 20)
    return (*_statement(f"{b * q} {DIVIDE} {b}", "=", str(q)), "div", op, True)


def approximation(rng: random.Random) -> tuple[str, int, int, str, str, bool]:
    kind = rng.choice(["div", "div", "sqrt", "const"])
    if kind == "div":
        while True:
            a, b = rng.randint(1, 99), rng.randint(2, 12)
            if a % b:
                break
        return (*_statement(f"{a} {DIVIDE} {b}", "≈", f"{a / b:.2f}"), "approx", "div", False)
    if kind == "sqrt":
        n = rng.choice([k for k in range(2, 200) if math.isqrt(k) ** 2 != k])
        return (*_statement(f"√{n}", "≈", f"{math.sqrt(n):.2f}"), "approx", "sqrt", False)
    left, value = rng.choice([("π", math.pi), ("22/7", 22 / 7), ("e", math.e), ("355/113", 355 / 113)])
    return (*_statement(left, "≈", f"{value:.2f}"), "approx", "const", False)


def comparison(rng: random.Random) -> tuple[str, int, int, str, str, bool]:
    n = rng.choice([1, 2, 3])
    a, b = _digits(rng, n), _digits(rng, rng.choice([n, n, 1, 2]))
    if rng.random() < 0.1:
        b = a
    sign = "<" if a < b else ">" if a > b else "="
    text = f"{a} vs {b}: "
    return text + sign, len(text), len(text) + 1, "compare", "compare", True


def linear(rng: random.Random) -> tuple[str, int, int, str, str, bool]:
    v, x = rng.choice(["x", "y", "n", "a"]), rng.randint(0, 20)
    form = rng.choice(["add", "sub", "mul"])
    if form == "add":
        c = rng.randint(1, 20)
        left = f"{v} + {c} = {x + c}"
    elif form == "sub":
        c = rng.randint(1, x) if x > 0 else 0
        left = f"{v} {MINUS} {c} = {x - c}"
    else:
        c = rng.randint(2, 9)
        left = f"{c}{v} = {c * x}"
    text = f"{left}, {v} = "
    return text + str(x), len(text), len(text) + len(str(x)), "linear", "linear", True


def _frac(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{_number(f.numerator)}/{f.denominator}"


def fraction(rng: random.Random) -> tuple[str, int, int, str, str, bool]:
    a = Fraction(rng.randint(1, 9), rng.randint(2, 12))
    b = Fraction(rng.randint(1, 9), rng.randint(2, 12))
    op = rng.choice(["add", "sub", "mul", "simplify"])
    if op == "simplify":
        k = rng.randint(2, 5)
        left = f"{a.numerator * k}/{a.denominator * k}"
        return (*_statement(left, "=", _frac(a)), "fraction", "simplify", True)
    if op == "sub" and b > a:
        a, b = b, a
    value = {"add": a + b, "sub": a - b, "mul": a * b}[op]
    symbol = {"add": "+", "sub": MINUS, "mul": TIMES}[op]
    return (*_statement(f"{_frac(a)} {symbol} {_frac(b)}", "=", _frac(value)), "fraction", op, True)


def trigonometry(rng: random.Random) -> tuple[str, int, int, str, str, bool]:
    if rng.random() < 0.5:
        left, right = rng.choice(TRIG_IDENTITIES)
        v = rng.choice(VARIABLES)
        return (*_statement(left.format(v=v), "=", right.format(v=v)), "trig", "identity", True)
    left, right, exact = rng.choice(TRIG_VALUES)
    return (*_statement(left, "=" if exact else "≈", right), "trig", "value", exact)


def number_words(rng: random.Random, lang: str) -> tuple[str, int, int, str, str, bool]:
    op = rng.choice(["add", "sub", "mul"])
    if op == "add":
        a = rng.randint(0, 20)
        b = rng.randint(0, 20 - a)
        c = a + b
    elif op == "sub":
        a = rng.randint(0, 20)
        b = rng.randint(0, a)
        c = a - b
    else:
        a = rng.randint(0, 10)
        b = rng.randint(0, 20 // max(a, 1))
        c = a * b
    word, equals = OPERATOR_WORDS[op][lang]
    names = WORDS[lang]
    return (*_statement(f"{names[a]} {word} {names[b]}", equals, names[c]), f"words_{lang}", op, True)


def digit_words(rng: random.Random, lang: str) -> tuple[str, int, int, str, str, bool]:
    op = rng.choice(["add", "sub", "mul"])
    a, b = rng.randint(0, 99), rng.randint(0, 99 if op != "mul" else 9)
    if op == "sub" and b > a:
        a, b = b, a
    c = {"add": a + b, "sub": a - b, "mul": a * b}[op]
    word, equals = OPERATOR_WORDS[op][lang]
    return (*_statement(f"{a} {word} {b}", equals, str(c)), f"digits_{lang}", op, True)


def word_problem(rng: random.Random, lang: str) -> tuple[str, int, int, str, str, bool]:
    op = rng.choice(["add", "sub"])
    a = rng.randint(2, 99)
    b = rng.randint(1, 50) if op == "add" else rng.randint(1, a)
    name, gender = rng.choice(NAMES)
    template = PROBLEMS[(lang, op)]
    head, tail = template.split("{ANS}")
    prompt = head.format(name=name, a=a, b=b, obj=rng.choice(OBJECTS[lang]), p=PRONOUNS[lang][gender])
    answer = str(a + b if op == "add" else a - b)
    return prompt + answer + tail, len(prompt), len(prompt) + len(answer), f"problem_{lang}", op, True


def _per_language(fn: Callable, lang: str) -> Callable:
    def generate(rng: random.Random):
        out = fn(rng, lang)
        return (*out, lang)

    return generate


def _symbols(fn: Callable) -> Callable:
    return lambda rng: (*fn(rng), "symbols")


CATEGORIES = (
    "add_1d",
    "add_2d",
    "add_3d",
    "sub_1d",
    "sub_2d",
    "sub_3d",
    "mul",
    "div",
    "approx",
    "compare",
    "linear",
    "fraction",
    "trig",
    *(f"{kind}_{lang}" for kind in ("words", "digits", "problem") for lang in ("en", "es", "fr")),
)
GENERATORS: list[tuple[Callable, float]] = [
    # arithmetic in digits dominates: a small model needs many examples to learn carries
    (_symbols(arithmetic), 100),
    (_symbols(approximation), 6),
    (_symbols(comparison), 6),
    (_symbols(linear), 8),
    (_symbols(fraction), 6),
    (_symbols(trigonometry), 4),
    *[(_per_language(number_words, lang), 5) for lang in ("en", "es", "fr")],
    *[(_per_language(digit_words, lang), 3) for lang in ("en", "es", "fr")],
    *[(_per_language(word_problem, lang), 2) for lang in ("en", "es", "fr")],
]


def _seeded(seed: int, purpose: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"mathlm:{purpose}:{seed}".encode()).digest()[:8], "little"))


def generate(seed: int, index: int) -> Sample:
    """Sample number `index` of the corpus with this seed (a pure function)."""
    rng = _seeded(seed, f"sample-{index}")
    fns, weights = zip(*GENERATORS)
    text, start, end, category, operation, exact, language = rng.choices(fns, weights=weights)[0](rng)
    return Sample(index, text, category, operation, language, exact, start, end)


def split_of(sample: Sample) -> str:
    """'heldout' for about HELDOUT_PERCENT% of distinct problems, by a hash of the prompt text."""
    h = int.from_bytes(hashlib.sha256(sample.prompt.encode()).digest()[:4], "little")
    return "heldout" if h % 100 < HELDOUT_PERCENT else "train"


class MathCorpus:
    """The documents of one split, in index order; `documents(start=i)` resumes at index i."""

    def __init__(self, split: str = "train", seed: int = 0):
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        self.split, self.seed = split, seed

    def documents(self, start: int = 0, limit: int | None = None) -> Iterator[Sample]:
        index, produced = start, 0
        while limit is None or produced < limit:
            sample = generate(self.seed, index)
            index += 1
            if split_of(sample) == self.split:
                produced += 1
                yield sample

    def describe(self) -> dict:
        return {"kind": "mathlm", "split": self.split, "seed": self.seed}
