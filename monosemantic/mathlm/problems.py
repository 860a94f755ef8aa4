"""The problem generators of the math corpus, one per category family: each writes one sample with a
`Builder` (every span with its role) and says its category, operation and whether it is exact.
`GENERATORS` names them with their default weights; `corpus.py` draws from them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from monosemantic.mathlm.language import LANGUAGES, NAMES, OBJECTS, OPERATION_WORDS, PROBLEMS, PRONOUNS
from monosemantic.mathlm.sample import MINUS, Builder, Role

ESTIMATE_SHARE = 0.4  # of 2- and 3-digit additions and subtractions: `≈` to the nearest ten

Generated = tuple[Builder, str, str, bool]  # builder, category, operation, exact


def _digits(rng: random.Random, n_digits: int) -> int:
    return rng.randint(0 if n_digits == 1 else 10 ** (n_digits - 1), 10**n_digits - 1)


def _binary(b: Builder, a: int | str, op: str, c: int | str) -> Builder:
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


def arithmetic(b: Builder, op: str, n: int) -> Generated:
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


def multiplication(b: Builder) -> Generated:
    rng = b.rng
    x, y = (rng.randint(1, 12), rng.randint(1, 12)) if rng.random() < 0.6 else (rng.randint(13, 99), rng.randint(2, 9))
    if rng.random() < 0.5:
        x, y = y, x
    _binary(b, x, "mul", y).relation(True, "mul").answer(
        lambda: b.digits(str(x * y), "answer_digit", operation="mul", operand=0, exact=True)
    )
    return b, "mul", "mul", True


def division(b: Builder) -> Generated:
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


def square_root(b: Builder) -> Generated:
    rng = b.rng
    n = rng.randint(1, 15) ** 2 if rng.random() < 0.35 else rng.randint(2, 200)
    root = math.isqrt(n)
    exact = root * root == n
    text = str(root) if exact else str(Decimal(math.sqrt(n)).quantize(Decimal("0.01"), ROUND_HALF_UP))
    b.add("√", Role("root", "sqrt")).digits(str(n), "operand_digit", operation="sqrt", operand=1)
    b.relation(exact, "sqrt").answer(lambda: b.digits(text, "answer_digit", operation="sqrt", operand=0, exact=exact))
    return b, "root" if exact else "approx", "sqrt", exact


CONSTANTS = [("π", math.pi), ("e", math.e)]


def constant(b: Builder) -> Generated:
    name, value = b.rng.choice(CONSTANTS)
    b.add(name, Role("constant", "const")).relation(False, "const")
    text = str(Decimal(value).quantize(Decimal("0.01"), ROUND_HALF_UP))
    b.answer(lambda: b.digits(text, "answer_digit", operation="const", operand=0, exact=False))
    return b, "approx", "const", False


def comparison(b: Builder) -> Generated:
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


def linear(b: Builder) -> Generated:
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


def _fraction(b: Builder, f: Fraction, kind: str, **attrs) -> Builder:
    b.digits(str(f.numerator), kind, **attrs)
    if f.denominator != 1:
        b.add("/", Role("fraction_bar", attrs.get("operation"))).digits(str(f.denominator), kind, **attrs)
    return b


def fraction(b: Builder) -> Generated:
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


def number_words_statement(b: Builder, lang: str) -> Generated:
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


def digits_in_words(b: Builder, lang: str) -> Generated:
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


def word_problem(b: Builder, lang: str) -> Generated:
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


def _plain(b: Builder, text: str, lang: str) -> None:
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


def trigonometry(b: Builder) -> Generated:
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


def _formula(b: Builder, text: str, op: str, exact: bool | None = None) -> None:
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
    return lambda rng: (fn(Builder(rng), *args), "symbols")


def _language(fn: Callable[..., Generated], lang: str) -> Callable[[random.Random], tuple[Generated, str]]:
    return lambda rng: (fn(Builder(rng), lang), lang)


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
