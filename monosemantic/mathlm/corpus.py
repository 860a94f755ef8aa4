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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from monosemantic.mathlm.language import (
    LANGUAGE_NAMES,
    LANGUAGES,
    NAMES,
    OBJECTS,
    OPERATION_WORDS,
    PROBLEMS,
    PRONOUNS,
    RELATION_WORDS,
    number_words,
    word_value,
)

HELDOUT_PERCENT = 5
MINUS, TIMES, DIVIDE = "−", "×", "÷"  # U+2212, U+00D7, U+00F7
OPERATOR_SYMBOLS = {"add": "+", "sub": MINUS, "mul": TIMES, "div": DIVIDE}
ASCII_ALIASES = {MINUS: ["-"], TIMES: ["*", "x"], DIVIDE: ["/"]}  # what users type
ASCII_SHARE = 0.4  # of the operators that have an ASCII alias
ESTIMATE_SHARE = 0.4  # of 2- and 3-digit additions and subtractions: `≈` to the nearest ten
PLACES = ["units", "tens", "hundreds", "thousands", "ten thousands"]
DECIMAL_PLACES = ["tenths", "hundredths"]
OPERATION_NAMES = {"add": "addition", "sub": "subtraction", "mul": "multiplication", "div": "division"}


@dataclass(frozen=True)
class Role:
    """What one span of a sample's text is, as the generator wrote it.

    kind: operand_digit, operand_point, operand_sign, operator, operator_word, relation, relation_word,
    answer_digit, answer_point, answer_sign, answer_relation (`<` of a comparison), number_word,
    number_joiner (the hyphens, spaces, "y" and "et" inside a number in words), space, name, pronoun,
    object, word, punctuation, variable, function, constant, fraction_bar, power, root, versus, bos, eos.
    """

    kind: str
    operation: str | None = None
    """add / sub / mul / div / sqrt / compare / linear / ..., on the tokens of a statement"""
    operand: int | None = None
    """1 or 2 for the operands' tokens, 0 for the answer's"""
    place: str | None = None
    """place value of a digit: units, tens, hundreds, ..., tenths, hundredths"""
    value: int | None = None
    """the whole number a digit or number word belongs to (operands and answers; x100 for decimals)"""
    word_value: int | None = None
    """what a number word stands for on its own ("forty" -> 40)"""
    exact: bool | None = None
    """on relations and answers: `=` (True) or `≈` (False)"""
    form: str | None = None
    """on operators: symbol, ascii or word; on relations: symbol or word"""
    language: str | None = None
    """on words: en, es or fr"""
    where: str | None = None
    """on spaces: before_relation / after_relation / before_operator / after_operator / in_phrase"""

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """One line in words: 'answer_digit place=tens exact=True'."""
        return " ".join([self.kind, *(f"{k}={v}" for k, v in self.as_dict().items() if k != "kind")])


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    role: Role


@dataclass(frozen=True)
class Sample:
    """One text of the corpus. `text[answer_start:answer_end]` is the answer; what precedes it is the
    prompt of the greedy-answer task. `spans` cover the text, each with its Role."""

    id: int
    text: str
    category: str
    operation: str
    language: str
    exact: bool
    answer_start: int
    answer_end: int
    form: str = "symbol"
    spans: tuple[Span, ...] = ()

    @property
    def prompt(self) -> str:
        return self.text[: self.answer_start]

    @property
    def answer(self) -> str:
        return self.text[self.answer_start : self.answer_end]

    @property
    def completion(self) -> str:
        """Everything after the prompt (answer plus closing punctuation, if any)."""
        return self.text[self.answer_start :]

    @property
    def meta(self) -> dict[str, str]:
        """Document properties in words, for labels ("language: Spanish", "operation: division")."""
        return {
            "language": LANGUAGE_NAMES[self.language],
            "operation": OPERATION_NAMES.get(self.operation, self.operation),
            "category": self.category,
            "result": "exact" if self.exact else "approximate",
            "form": self.form,
        }

    def role_at(self, char: int) -> Role:
        """The role of the character at offset `char`."""
        for span in self.spans:
            if span.start <= char < span.end:
                return span.role
        raise IndexError(f"offset {char} is outside the text ({len(self.text)} characters)")

    def canonical_prompt(self) -> str:
        """The prompt with ASCII operators written as the symbols they stand for (the split's key)."""
        chars = list(self.prompt)
        for span in self.spans:
            if span.role.kind == "operator" and span.role.form == "ascii" and span.start < self.answer_start:
                chars[span.start] = OPERATOR_SYMBOLS[span.role.operation or ""]
        return "".join(chars)

    def with_form(self, form: str) -> Sample:
        """The same problem with its operators written as symbols ("symbol") or ASCII ("ascii"): the
        evaluation's two columns. Samples without such operators come back unchanged."""
        if form not in ("symbol", "ascii"):
            raise ValueError(f"form must be 'symbol' or 'ascii', got {form!r}")
        chars, spans, changed = list(self.text), [], False
        for span in self.spans:
            role = span.role
            symbol = OPERATOR_SYMBOLS.get(role.operation or "") if role.kind == "operator" else None
            if symbol in ASCII_ALIASES and role.form in ("symbol", "ascii") and role.form != form:
                chars[span.start] = symbol if form == "symbol" else ASCII_ALIASES[symbol][0]
                role, changed = replace(role, form=form), True
            spans.append(Span(span.start, span.end, role))
        if not changed:
            return self
        return replace(self, text="".join(chars), spans=tuple(spans), form=form)


class _Builder:
    """Builds a text span by span, each span with its role."""

    def __init__(self, rng: random.Random):
        self.rng, self.text, self.spans = rng, "", []
        self.answer_start = self.answer_end = -1
        self.form = "symbol"

    def add(self, piece: str, role: Role) -> _Builder:
        if piece:
            self.spans.append(Span(len(self.text), len(self.text) + len(piece), role))
            self.text += piece
        return self

    def space(self, where: str | None = None) -> _Builder:
        return self.add(" ", Role("space", where=where))

    def digits(self, text: str, kind: str, **attrs) -> _Builder:
        """A number in digits: each digit its own span with its place value; '.' and '−' too."""
        whole, _, frac = text.lstrip(MINUS + "-").partition(".")
        value = int(round(float(text.replace(MINUS, "-")) * (100 if frac else 1)))
        if text[0] in (MINUS, "-"):
            self.add(text[0], Role("answer_sign" if kind == "answer_digit" else "operand_sign", **attrs))
        for i, d in enumerate(whole):
            self.add(d, Role(kind, place=PLACES[len(whole) - 1 - i], value=value, **attrs))
        if frac:
            self.add(".", Role(kind.replace("digit", "point"), value=value, **attrs))
            for i, d in enumerate(frac):
                self.add(d, Role(kind, place=DECIMAL_PLACES[i], value=value, **attrs))
        return self

    def words(self, n: int, lang: str, **attrs) -> _Builder:
        for piece in number_words(n, lang):
            own = word_value(piece, lang)  # None for the joiners: "-", " ", "y", "et"
            if own is not None:
                self.add(piece, Role("number_word", value=n, word_value=own, language=lang, **attrs))
            else:
                self.add(piece, Role("number_joiner", value=n, language=lang, **attrs))
        return self

    def phrase(self, text: str, kind: str, **attrs) -> _Builder:
        """Words of a phrase ("es igual a"), each a span of `kind`, spaces between them in_phrase."""
        for i, word in enumerate(text.split(" ")):
            if i:
                self.space("in_phrase")
            self.add(word, Role(kind, **attrs))
        return self

    def operator(self, operation: str) -> _Builder:
        symbol = OPERATOR_SYMBOLS[operation]
        if symbol in ASCII_ALIASES and self.rng.random() < ASCII_SHARE:
            self.form = "ascii"
            return self.add(self.rng.choice(ASCII_ALIASES[symbol]), Role("operator", operation, form="ascii"))
        return self.add(symbol, Role("operator", operation, form="symbol"))

    def relation(self, exact: bool, operation: str, lang: str | None = None) -> _Builder:
        self.space("before_relation")
        if lang is None:
            self.add("=" if exact else "≈", Role("relation", operation, exact=exact, form="symbol"))
        else:
            words = RELATION_WORDS[exact][lang]
            self.phrase(words, "relation_word", operation=operation, exact=exact, form="word", language=lang)
        return self.space("after_relation")

    def answer(self, build: Callable[[], object]) -> _Builder:
        self.answer_start = len(self.text)
        build()
        self.answer_end = len(self.text)
        return self


Generated = tuple[_Builder, str, str, bool]  # builder, category, operation, exact


def _digits(rng: random.Random, n_digits: int) -> int:
    return rng.randint(0 if n_digits == 1 else 10 ** (n_digits - 1), 10**n_digits - 1)


def _binary(b: _Builder, a: int | str, op: str, c: int | str) -> _Builder:
    b.digits(str(a), "operand_digit", operation=op, operand=1).space("before_operator").operator(op)
    return b.space("after_operator").digits(str(c), "operand_digit", operation=op, operand=2)


def _decimal(value: Fraction) -> tuple[str, bool]:
    """value written with at most 2 decimals, and whether that is exact."""
    exact = (value * 100).denominator == 1
    text = str(Decimal(value.numerator) / Decimal(value.denominator))
    if exact:
        return (text.rstrip("0").rstrip(".") if "." in text else text), True
    rounded = (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return str(rounded), False


def arithmetic(b: _Builder, op: str, n: int) -> Generated:
    """add/sub with n-digit operands (the second n or n-1 digits); from 2 digits on, some are
    estimates (`≈`, the nearest ten): `=` and `≈` as minimal pairs on the same problems."""
    rng = b.rng
    x, y = _digits(rng, n), _digits(rng, rng.choice([n, n, max(1, n - 1)]))
    if op == "sub" and y > x:
        x, y = y, x
    result = x + y if op == "add" else x - y
    if n >= 2 and rng.random() < ESTIMATE_SHARE:  # `347 + 589 ≈ 940`: the nearest ten
        rounded = int(Decimal(result).quantize(Decimal("1E1"), ROUND_HALF_UP))
        _binary(b, x, op, y).relation(False, op)
        b.answer(lambda: b.digits(str(rounded), "answer_digit", operation=op, operand=0, exact=False))
        return b, "estimate", op, False
    _binary(b, x, op, y).relation(True, op)
    b.answer(lambda: b.digits(str(result), "answer_digit", operation=op, operand=0, exact=True))
    return b, f"{op}_{max(len(str(x)), len(str(y)))}d", op, True


def multiplication(b: _Builder) -> Generated:
    rng = b.rng
    x, y = (rng.randint(1, 12), rng.randint(1, 12)) if rng.random() < 0.6 else (rng.randint(13, 99), rng.randint(2, 9))
    if rng.random() < 0.5:
        x, y = y, x
    _binary(b, x, "mul", y).relation(True, "mul").answer(
        lambda: b.digits(str(x * y), "answer_digit", operation="mul", operand=0, exact=True)
    )
    return b, "mul", "mul", True


def division(b: _Builder) -> Generated:
    """Minimal pairs: `21 ÷ 7 = 3`, `7 ÷ 4 = 1.75`, `22 ÷ 7 ≈ 3.14`."""
    rng = b.rng
    y = rng.randint(2, 12)
    kind = rng.random()
    x = y * rng.randint(1, 12) if kind < 0.3 else rng.randint(1, 99)
    text, exact = _decimal(Fraction(x, y))
    _binary(b, x, "div", y).relation(exact, "div").answer(
        lambda: b.digits(text, "answer_digit", operation="div", operand=0, exact=exact)
    )
    return b, "div" if exact else "approx", "div", exact


def square_root(b: _Builder) -> Generated:
    rng = b.rng
    n = rng.randint(1, 15) ** 2 if rng.random() < 0.35 else rng.randint(2, 200)
    root = math.isqrt(n)
    exact = root * root == n
    text = str(root) if exact else str(Decimal(math.sqrt(n)).quantize(Decimal("0.01"), ROUND_HALF_UP))
    b.add("√", Role("root", "sqrt")).digits(str(n), "operand_digit", operation="sqrt", operand=1)
    b.relation(exact, "sqrt").answer(lambda: b.digits(text, "answer_digit", operation="sqrt", operand=0, exact=exact))
    return b, "root" if exact else "approx", "sqrt", exact


CONSTANTS = [("π", math.pi), ("e", math.e)]


def constant(b: _Builder) -> Generated:
    name, value = b.rng.choice(CONSTANTS)
    b.add(name, Role("constant", "const")).relation(False, "const")
    text = str(Decimal(value).quantize(Decimal("0.01"), ROUND_HALF_UP))
    b.answer(lambda: b.digits(text, "answer_digit", operation="const", operand=0, exact=False))
    return b, "approx", "const", False


def comparison(b: _Builder) -> Generated:
    rng = b.rng
    n = rng.choice([1, 2, 3])
    x, y = _digits(rng, n), _digits(rng, rng.choice([n, n, 1, 2]))
    if rng.random() < 0.1:
        y = x
    sign = "<" if x < y else ">" if x > y else "="
    b.digits(str(x), "operand_digit", operation="compare", operand=1).space().add("vs", Role("versus", "compare"))
    b.space().digits(str(y), "operand_digit", operation="compare", operand=2).add(":", Role("punctuation")).space()
    b.answer(lambda: b.add(sign, Role("answer_relation", "compare", operand=0, exact=True)))
    return b, "compare", "compare", True


def linear(b: _Builder) -> Generated:
    rng = b.rng
    v, x = rng.choice(["x", "y", "n", "a"]), rng.randint(0, 20)
    form = rng.choice(["add", "sub", "mul"])
    var = Role("variable", "linear")
    if form == "mul":
        c = rng.randint(2, 9)
        b.digits(str(c), "operand_digit", operation="linear", operand=1).add(v, var)
        rhs = c * x
    else:
        c = rng.randint(1, 20) if form == "add" else (rng.randint(1, x) if x > 0 else 0)
        b.add(v, var).space("before_operator").operator(form).space("after_operator")
        b.digits(str(c), "operand_digit", operation="linear", operand=1)
        rhs = x + c if form == "add" else x - c
    b.relation(True, "linear").digits(str(rhs), "operand_digit", operation="linear", operand=2)
    b.add(",", Role("punctuation")).space().add(v, var).relation(True, "linear")
    b.answer(lambda: b.digits(str(x), "answer_digit", operation="linear", operand=0, exact=True))
    return b, "linear", "linear", True


def _fraction(b: _Builder, f: Fraction, kind: str, **attrs) -> _Builder:
    b.digits(str(f.numerator), kind, **attrs)
    if f.denominator != 1:
        b.add("/", Role("fraction_bar", attrs.get("operation"))).digits(str(f.denominator), kind, **attrs)
    return b


def fraction(b: _Builder) -> Generated:
    rng = b.rng
    x = Fraction(rng.randint(1, 9), rng.randint(2, 12))
    y = Fraction(rng.randint(1, 9), rng.randint(2, 12))
    op = rng.choice(["add", "sub", "mul", "simplify"])
    if op == "simplify":
        k = rng.randint(2, 5)
        b.digits(str(x.numerator * k), "operand_digit", operation="simplify", operand=1)
        b.add("/", Role("fraction_bar", "simplify")).digits(
            str(x.denominator * k), "operand_digit", operation="simplify", operand=1
        )
        b.relation(True, "simplify").answer(
            lambda: _fraction(b, x, "answer_digit", operation="simplify", operand=0, exact=True)
        )
        return b, "fraction", "simplify", True
    if op == "sub" and y > x:
        x, y = y, x
    value = {"add": x + y, "sub": x - y, "mul": x * y}[op]
    _fraction(b, x, "operand_digit", operation=op, operand=1).space("before_operator").operator(op)
    _fraction(b.space("after_operator"), y, "operand_digit", operation=op, operand=2).relation(True, op)
    b.answer(lambda: _fraction(b, value, "answer_digit", operation=op, operand=0, exact=True))
    return b, "fraction", op, True


def number_words_statement(b: _Builder, lang: str) -> Generated:
    """`veintidós menos tres es igual a diecinueve`: operands and answer 0-99 in words."""
    rng = b.rng
    op = rng.choice(["add", "sub", "mul"])
    if op == "add":
        x = rng.randint(0, 99)
        y = rng.randint(0, 99 - x)
        z = x + y
    elif op == "sub":
        x = rng.randint(0, 99)
        y = rng.randint(0, x)
        z = x - y
    else:
        x = rng.randint(0, 12)
        y = rng.randint(0, min(12, 99 // max(x, 1)))
        z = x * y
    b.words(x, lang, operation=op, operand=1).space("before_operator")
    b.phrase(OPERATION_WORDS[op][lang], "operator_word", operation=op, form="word", language=lang)
    b.space("after_operator").words(y, lang, operation=op, operand=2).relation(True, op, lang)
    b.answer(lambda: b.words(z, lang, operation=op, operand=0, exact=True))
    return b, f"words_{lang}", op, True


def digits_in_words(b: _Builder, lang: str) -> Generated:
    """`22 divided by 7 is approximately 3.14`, `47 plus 38 equals 85`."""
    rng = b.rng
    op = rng.choice(["add", "sub", "mul", "div"])
    x, y = rng.randint(0, 99), rng.randint(0, 99 if op in ("add", "sub") else 9)
    if op == "div":
        y = rng.randint(2, 12)
        x = y * rng.randint(1, 12) if rng.random() < 0.3 else rng.randint(1, 99)
    if op == "sub" and y > x:
        x, y = y, x
    text, exact = (
        _decimal(Fraction(x, y)) if op == "div" else (str({"add": x + y, "sub": x - y, "mul": x * y}[op]), True)
    )
    b.digits(str(x), "operand_digit", operation=op, operand=1).space("before_operator")
    b.phrase(OPERATION_WORDS[op][lang], "operator_word", operation=op, form="word", language=lang)
    b.space("after_operator").digits(str(y), "operand_digit", operation=op, operand=2).relation(exact, op, lang)
    b.answer(lambda: b.digits(text, "answer_digit", operation=op, operand=0, exact=exact))
    return b, f"digits_{lang}", op, exact


def word_problem(b: _Builder, lang: str) -> Generated:
    rng = b.rng
    op = rng.choice(["add", "sub"])
    x = rng.randint(2, 99)
    y = rng.randint(1, 99 - x) if op == "add" and x < 98 else rng.randint(1, x)
    if op == "add" and x >= 98:
        op, y = "sub", rng.randint(1, x)
    name, gender = rng.choice(NAMES)
    obj = rng.choice(OBJECTS[lang])
    template = rng.choice(PROBLEMS[(lang, op)])
    head, tail = template.split("{ANS}")
    for piece, field_name in _template_pieces(head):
        if field_name == "name":
            b.add(name, Role("name", language=lang))
        elif field_name == "obj":
            b.add(obj, Role("object", language=lang))
        elif field_name == "p":
            b.add(PRONOUNS[lang][gender], Role("pronoun", language=lang))
        elif field_name in ("a", "b"):
            operand = 1 if field_name == "a" else 2
            b.digits(str(x if operand == 1 else y), "operand_digit", operation=op, operand=operand)
        else:
            _plain(b, piece, lang)
    b.answer(
        lambda: b.digits(str(x + y if op == "add" else x - y), "answer_digit", operation=op, operand=0, exact=True)
    )
    _plain(b, tail, lang)
    return b, f"problem_{lang}", op, True


def _template_pieces(template: str) -> Iterator[tuple[str, str | None]]:
    import re

    for piece in re.split(r"(\{\w+\})", template):
        if piece:
            yield piece, piece[1:-1] if piece.startswith("{") else None


def _plain(b: _Builder, text: str, lang: str) -> None:
    """Template text: words, spaces and punctuation, each its own span."""
    import re

    for piece in re.findall(r"\w+|\s|[^\w\s]", text):
        if piece.isspace():
            b.space()
        elif piece[0].isalnum():
            b.add(piece, Role("word", language=lang))
        else:
            b.add(piece, Role("punctuation"))


TRIG_IDENTITIES = [  # exact identities in a variable v
    ("sin²({v}) + cos²({v})", "1"),
    ("2sin({v})cos({v})", "sin(2{v})"),
    ("sin({v})/cos({v})", "tan({v})"),
    ("cos(−{v})", "cos({v})"),
]
TRIG_OPERATORS = {"+": "add", MINUS: "neg"}  # `−` of a trigonometric formula negates: cos(−x)
TRIG_VALUES = [("sin(0)", "0"), ("cos(0)", "1"), ("sin(π/2)", "1"), ("cos(π)", "−1"), ("sin(π/6)", "1/2")]
TRIG_VALUES += [
    ("cos(π/3)", "1/2"),
    ("tan(π/4)", "1"),
    ("sin(π/4)", "0.71"),
    ("cos(π/6)", "0.87"),
    ("tan(π/3)", "1.73"),
]


def trigonometry(b: _Builder) -> Generated:
    """Identities and values of sin, cos, tan (`sin(π/4) ≈ 0.71`)."""
    rng = b.rng
    if rng.random() < 0.5:
        left, right = rng.choice(TRIG_IDENTITIES)
        v = rng.choice(["x", "y", "θ", "t"])
        left, right, exact, op = left.format(v=v), right.format(v=v), True, "identity"
    else:
        left, right = rng.choice(TRIG_VALUES)
        exact, op = "." not in right, "value"
    _formula(b, left, op)
    b.relation(exact, op).answer(lambda: _formula(b, right, op, exact=exact))
    return b, "trig", op, exact


def _formula(b: _Builder, text: str, op: str, exact: bool | None = None) -> None:
    """A trigonometric expression; `exact` given: it is the answer (answer digits, `=` or `≈`)."""
    import re

    pieces = re.findall(r"sin|cos|tan|−?[0-9]+(?:\.[0-9]+)?|.", text)
    for i, piece in enumerate(pieces):
        if piece in ("sin", "cos", "tan"):
            b.add(piece, Role("function", op))
        elif piece.lstrip(MINUS)[:1] in tuple("0123456789"):  # a number, with its sign ("−1")
            if exact is None:
                b.digits(piece, "operand_digit", operation=op, operand=1)
            else:
                b.digits(piece, "answer_digit", operation=op, operand=0, exact=exact)
        elif piece == " ":  # formulas have spaces only around an operator ("sin²(x) + cos²(x)")
            b.space("before_operator" if pieces[i + 1] in TRIG_OPERATORS else "after_operator")
        elif piece in TRIG_OPERATORS:
            b.add(piece, Role("operator", TRIG_OPERATORS[piece], form="symbol"))
        elif piece in ("π",):
            b.add(piece, Role("constant", op))
        elif piece.isalpha():
            b.add(piece, Role("variable", op))
        else:
            kind = {"(": "punctuation", ")": "punctuation", "/": "fraction_bar", "²": "power"}[piece]
            b.add(piece, Role(kind, op))


def _symbols(fn: Callable[..., Generated], *args) -> Callable[[random.Random], tuple[Generated, str]]:
    return lambda rng: (fn(_Builder(rng), *args), "symbols")


def _language(fn: Callable[..., Generated], lang: str) -> Callable[[random.Random], tuple[Generated, str]]:
    return lambda rng: (fn(_Builder(rng), lang), lang)


GENERATORS: dict[str, tuple[Callable[[random.Random], tuple[Generated, str]], float]] = {
    # name: (generator, default weight). 3-digit carries and multiplication need the most examples;
    # ≈ is 25-50% of all relations (the add/sub generators write estimates too, div inexact quotients)
    "add_1d": (_symbols(arithmetic, "add", 1), 2),
    "add_2d": (_symbols(arithmetic, "add", 2), 8),
    "add_3d": (_symbols(arithmetic, "add", 3), 24),
    "sub_1d": (_symbols(arithmetic, "sub", 1), 2),
    "sub_2d": (_symbols(arithmetic, "sub", 2), 8),
    "sub_3d": (_symbols(arithmetic, "sub", 3), 24),
    "mul": (_symbols(multiplication), 14),
    "div": (_symbols(division), 24),
    "root": (_symbols(square_root), 8),
    "const": (_symbols(constant), 1),
    "compare": (_symbols(comparison), 4),
    "linear": (_symbols(linear), 5),
    "fraction": (_symbols(fraction), 3),
    "trig": (_symbols(trigonometry), 2),
    **{f"words_{lang}": (_language(number_words_statement, lang), 5) for lang in LANGUAGES},
    **{f"digits_{lang}": (_language(digits_in_words, lang), 4) for lang in LANGUAGES},
    **{f"problem_{lang}": (_language(word_problem, lang), 4) for lang in LANGUAGES},
}
CATEGORIES = (
    *(f"{op}_{n}d" for op in ("add", "sub") for n in (1, 2, 3)),
    "mul",
    "div",
    "approx",
    "estimate",
    "root",
    "compare",
    "linear",
    "fraction",
    "trig",
    *(f"{kind}_{lang}" for kind in ("words", "digits", "problem") for lang in LANGUAGES),
)


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
