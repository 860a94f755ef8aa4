"""A reference reading of the math corpus, written from the text alone (for tests/mathlm/test_corpus.py):
every answer recomputed with Fraction / Decimal / integer arithmetic, numbers in words read with a
speller of 0-99 of our own (not language.py's tables), trigonometry evaluated with `math`, and the role
of every token derived from the parsed text."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest

from monosemantic.mathlm.corpus import generate

N_SAMPLES = 8000
LANGS = ("en", "es", "fr")


@functools.cache
def samples():
    return [generate(0, i) for i in range(N_SAMPLES)]


# ---- numbers in words, 0-99 -----------------------------------------------------------------------

EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
EN_TENS = dict(zip(range(2, 10), "twenty thirty forty fifty sixty seventy eighty ninety".split()))
ES_UNITS = "cero uno dos tres cuatro cinco seis siete ocho nueve".split()
ES_TEENS = "diez once doce trece catorce quince dieciséis diecisiete dieciocho diecinueve".split()
ES_TWENTIES = (
    "veinte veintiuno veintidós veintitrés veinticuatro veinticinco veintiséis veintisiete veintiocho veintinueve"
).split()
ES_TENS = dict(zip(range(3, 10), "treinta cuarenta cincuenta sesenta setenta ochenta noventa".split()))
FR_BASE = "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize".split()
FR_TENS = dict(zip(range(2, 7), "vingt trente quarante cinquante soixante".split()))


def spell(n: int, lang: str) -> str:
    """n in words, by the rules of each language (French: 70 = soixante-dix, 80 = quatre-vingts)."""
    if lang == "en":
        return EN_ONES[n] if n < 20 else EN_TENS[n // 10] + (f"-{EN_ONES[n % 10]}" if n % 10 else "")
    if lang == "es":
        if n < 30:
            return (ES_UNITS + ES_TEENS + ES_TWENTIES)[n]
        return ES_TENS[n // 10] + (f" y {ES_UNITS[n % 10]}" if n % 10 else "")
    if n <= 16:
        return FR_BASE[n]
    if n < 20:
        return f"dix-{FR_BASE[n - 10]}"
    if n >= 80:
        return "quatre-vingts" if n == 80 else "quatre-vingt-" + spell(n - 80, "fr")
    tens, rest = (n // 10, n % 10) if n < 60 else (6, n - 60)
    if rest == 0:
        return FR_TENS[tens]
    return f"{FR_TENS[tens]} et {spell(rest, 'fr')}" if rest in (1, 11) else f"{FR_TENS[tens]}-{spell(rest, 'fr')}"


NUMBER = {lang: {spell(n, lang): n for n in range(100)} for lang in LANGS}
# what one word stands for on its own ("quatre" in quatre-vingt-un is 4); "y" and "et" stand for nothing
WORD_VALUE = {lang: {w: n for w, n in NUMBER[lang].items() if not re.search(r"[- ]", w)} for lang in LANGS}
WORD_VALUE["fr"]["vingts"] = 20

OPERATOR_WORDS = {
    "en": {"plus": "add", "minus": "sub", "times": "mul", "divided by": "div"},
    "es": {"más": "add", "menos": "sub", "por": "mul", "dividido entre": "div"},
    "fr": {"plus": "add", "moins": "sub", "fois": "mul", "divisé par": "div"},
}
RELATION_WORDS = {  # phrase -> (language, exact)
    "equals": ("en", True),
    "is approximately": ("en", False),
    "es igual a": ("es", True),
    "es aproximadamente": ("es", False),
    "égale": ("fr", True),
    "égale environ": ("fr", False),
}
SYMBOLS = {"+": ("add", "symbol"), "−": ("sub", "symbol"), "×": ("mul", "symbol"), "÷": ("div", "symbol")}
SYMBOLS |= {"-": ("sub", "ascii"), "*": ("mul", "ascii"), "x": ("mul", "ascii"), "/": ("div", "ascii")}
PLACES = ("units", "tens", "hundreds", "thousands")


# ---- the reference: what the text is, and the role of each piece of it ------------------------------


@dataclass
class Ref:
    """A text rebuilt piece by piece from its parse, each piece with the role it must have."""

    category: str = ""
    operation: str = ""
    language: str = "symbols"
    exact: bool = True
    form: str = "symbol"
    answer: str = ""
    pieces: list[tuple[str, dict]] = field(default_factory=list)
    relations: list[bool] = field(default_factory=list)  # exact? of each relation
    operators: list[str] = field(default_factory=list)  # operator characters

    @property
    def text(self) -> str:
        return "".join(p for p, _ in self.pieces)

    def add(self, piece: str, kind: str, **attrs) -> Ref:
        self.pieces.append((piece, {"kind": kind, **{k: v for k, v in attrs.items() if v is not None}}))
        return self

    def space(self, where: str | None = None) -> Ref:
        return self.add(" ", "space", where=where)

    def number(self, text: str, part: str, **attrs) -> Ref:
        """Digits of an operand (part 'operand') or the answer ('answer'), each with its place value;
        the value of a decimal is in hundredths."""
        whole, _, frac = text.lstrip("−").partition(".")
        value = int(Decimal(text.replace("−", "-")) * (100 if frac else 1))
        if text.startswith("−"):
            self.add("−", f"{part}_sign", **attrs)
        for i, digit in enumerate(whole):
            self.add(digit, f"{part}_digit", place=PLACES[len(whole) - 1 - i], value=value, **attrs)
        if frac:
            self.add(".", f"{part}_point", value=value, **attrs)
            for digit, place in zip(frac, ("tenths", "hundredths")):
                self.add(digit, f"{part}_digit", place=place, value=value, **attrs)
        return self

    def words(self, phrase: str, lang: str, **attrs) -> Ref:
        value = NUMBER[lang][phrase]
        for piece in re.findall(r"[- ]|[^- ]+", phrase):
            if piece in WORD_VALUE[lang]:
                self.add(piece, "number_word", value=value, word_value=WORD_VALUE[lang][piece], language=lang, **attrs)
            else:
                assert piece in ("-", " ", "y", "et"), piece
                self.add(piece, "number_joiner", value=value, language=lang, **attrs)
        return self

    def phrase(self, phrase: str, kind: str, **attrs) -> Ref:
        for i, word in enumerate(phrase.split(" ")):
            if i:
                self.space("in_phrase")
            self.add(word, kind, **attrs)
        return self

    def relation(self, symbol_or_words: str, operation: str) -> Ref:
        exact = {"=": True, "≈": False}[symbol_or_words] if len(symbol_or_words) == 1 else None
        exact = RELATION_WORDS[symbol_or_words][1] if exact is None else exact
        self.relations.append(exact)
        self.space("before_relation")
        if symbol_or_words in ("=", "≈"):
            self.add(symbol_or_words, "relation", operation=operation, exact=exact, form="symbol")
        else:
            lang = RELATION_WORDS[symbol_or_words][0]
            self.phrase(symbol_or_words, "relation_word", operation=operation, exact=exact, form="word", language=lang)
        return self.space("after_relation")

    def operator(self, char: str) -> Ref:
        operation, form = SYMBOLS[char]
        self.operators.append(char)
        if form == "ascii":
            self.form = "ascii"
        return (
            self.space("before_operator").add(char, "operator", operation=operation, form=form).space("after_operator")
        )


def decimal_text(value: Fraction) -> tuple[str, bool]:
    """value with at most 2 decimals ('1.75', '10.5', '6'), exact; else rounded half up to 2 ('3.14')."""
    if (value * 100).denominator == 1:
        hundredths = int(value * 100)
        whole, frac = divmod(hundredths, 100)
        return (f"{whole}.{frac:02d}".rstrip("0") if frac else str(whole)), True
    k = math.floor(value * 100 + Fraction(1, 2))
    return f"{k // 100}.{k % 100:02d}", False


def fraction_text(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def ref_fraction_operand(ref: Ref, text: str, part: str, **attrs) -> Ref:
    numerator, _, denominator = text.partition("/")
    ref.number(numerator, part, **attrs)
    if denominator:
        ref.add("/", "fraction_bar", operation=attrs["operation"]).number(denominator, part, **attrs)
    return ref


def parse_binary(text: str) -> Ref | None:
    """`a op b = c` and `a op b ≈ c`: arithmetic, estimates, division, fractions."""
    m = re.fullmatch(r"(\d+(?:/\d+)?) (\S) (\d+(?:/\d+)?) (=|≈) (\S+)", text)
    if not m:
        return None
    a, op_char, b, rel, answer = m.groups()
    op = SYMBOLS[op_char][0]
    ref = Ref(operation=op, exact=rel == "=")
    if "/" in a + b + answer:
        x, y = Fraction(a), Fraction(b)
        assert op in ("add", "sub", "mul") and (op != "sub" or x >= y), text
        expected = fraction_text({"add": x + y, "sub": x - y, "mul": x * y}[op])
        ref.category, ref.answer = "fraction", expected
        ref_fraction_operand(ref, a, "operand", operation=op, operand=1).operator(op_char)
        ref_fraction_operand(ref, b, "operand", operation=op, operand=2).relation(rel, op)
        return ref_fraction_operand(ref, expected, "answer", operation=op, operand=0, exact=True)
    x, y = int(a), int(b)
    if op == "div":
        expected, exact = decimal_text(Fraction(x, y))
        ref.category = "div" if exact else "approx"
    elif rel == "≈":  # an estimate: the nearest ten, halves up
        assert op in ("add", "sub") and max(len(a), len(b)) >= 2
        exact, ref.category = False, "estimate"
        expected = str(((x + y if op == "add" else x - y) + 5) // 10 * 10)
    else:
        exact, expected = True, str({"add": x + y, "sub": x - y, "mul": x * y}[op])
        ref.category = "mul" if op == "mul" else f"{op}_{max(len(a), len(b))}d"
    assert exact == (rel == "="), text
    ref.answer = expected
    ref.number(a, "operand", operation=op, operand=1).operator(op_char).number(b, "operand", operation=op, operand=2)
    return ref.relation(rel, op).number(expected, "answer", operation=op, operand=0, exact=exact)


def parse_simplify(text: str) -> Ref | None:
    m = re.fullmatch(r"(\d+)/(\d+) = (\S+)", text)
    if not m:
        return None
    n, d, _ = m.groups()
    assert math.gcd(int(n), int(d)) > 1, f"{text}: nothing to simplify"
    expected = fraction_text(Fraction(int(n), int(d)))
    ref = Ref("fraction", "simplify", answer=expected)
    ref_fraction_operand(ref, f"{n}/{d}", "operand", operation="simplify", operand=1).relation("=", "simplify")
    return ref_fraction_operand(ref, expected, "answer", operation="simplify", operand=0, exact=True)


def parse_root(text: str) -> Ref | None:
    m = re.fullmatch(r"√(\d+) (=|≈) (\S+)", text)
    if not m:
        return None
    n = int(m.group(1))
    if math.isqrt(n) ** 2 == n:
        expected, exact = str(math.isqrt(n)), True
    else:  # sqrt(n) rounded half up to hundredths, in integers: round(sqrt(10000 n)) = (isqrt(40000 n) + 1) // 2
        k = (math.isqrt(40000 * n) + 1) // 2
        expected, exact = f"{k // 100}.{k % 100:02d}", False
    ref = Ref("root" if exact else "approx", "sqrt", exact=exact, answer=expected)
    ref.add("√", "root", operation="sqrt").number(m.group(1), "operand", operation="sqrt", operand=1)
    return ref.relation(m.group(2), "sqrt").number(expected, "answer", operation="sqrt", operand=0, exact=exact)


def parse_constant(text: str) -> Ref | None:
    m = re.fullmatch(r"(π|e) ≈ (\S+)", text)
    if not m:
        return None
    expected = {"π": "3.14", "e": "2.72"}[m.group(1)]
    ref = Ref("approx", "const", exact=False, answer=expected).add(m.group(1), "constant", operation="const")
    return ref.relation("≈", "const").number(expected, "answer", operation="const", operand=0, exact=False)


def parse_compare(text: str) -> Ref | None:
    m = re.fullmatch(r"(\d+) vs (\d+): (\S)", text)
    if not m:
        return None
    a, b = int(m.group(1)), int(m.group(2))
    expected = "<" if a < b else ">" if a > b else "="
    ref = Ref("compare", "compare", answer=expected).number(m.group(1), "operand", operation="compare", operand=1)
    ref.space().add("vs", "versus", operation="compare").space()
    ref.number(m.group(2), "operand", operation="compare", operand=2).add(":", "punctuation").space()
    return ref.add(expected, "answer_relation", operation="compare", operand=0, exact=True)


def parse_linear(text: str) -> Ref | None:
    m = re.fullmatch(r"(?:(\d)([xyna])|([xyna]) (\S) (\d+)) = (\d+), ([xyna]) = (\d+)", text)
    if not m:
        return None
    c_mul, v_mul, v_add, op_char, c_add, rhs, v, _ = m.groups()
    var = {"operation": "linear"}
    ref = Ref("linear", "linear")
    if c_mul:
        assert v == v_mul and int(rhs) % int(c_mul) == 0
        x = int(rhs) // int(c_mul)
        ref.number(c_mul, "operand", operand=1, **var).add(v, "variable", **var)
    else:
        assert v == v_add
        x = int(rhs) - int(c_add) if SYMBOLS[op_char][0] == "add" else int(rhs) + int(c_add)
        ref.add(v, "variable", **var).operator(op_char).number(c_add, "operand", operand=1, **var)
    assert 0 <= x <= 20
    ref.answer = str(x)
    ref.relation("=", "linear").number(rhs, "operand", operand=2, **var).add(",", "punctuation").space()
    ref.add(v, "variable", **var).relation("=", "linear")
    return ref.number(str(x), "answer", operand=0, exact=True, **var)


def trig_value(expr: str, v: float) -> float:
    """The value of a formula of the corpus ('2sin(x)cos(x)', 'sin²(θ) + cos²(θ)') at variable = v."""
    e = re.sub(r"(sin|cos|tan)²\(([^)]*)\)", r"(\1(\2)**2)", expr).replace("π", "pi").replace("−", "-")
    e = re.sub(r"(?<![a-z])[xytθ](?![a-z])", f"({v})", e)
    e = re.sub(r"(\d|\))(?=[a-z(])", r"\1*", e)  # implicit products: 2sin, )cos, 2(0.3)
    return eval(e, {"sin": math.sin, "cos": math.cos, "tan": math.tan, "pi": math.pi})  # noqa: S307


def ref_formula(ref: Ref, text: str, op: str, exact: bool | None = None) -> None:
    for piece in re.findall(r"sin|cos|tan|−?\d+(?:\.\d+)?|.", text):
        if piece in ("sin", "cos", "tan"):
            ref.add(piece, "function", operation=op)
        elif re.fullmatch(r"−?\d+(?:\.\d+)?", piece):
            if exact is None:
                ref.number(piece, "operand", operation=op, operand=1)
            else:
                ref.number(piece, "answer", operation=op, operand=0, exact=exact)
        elif piece == "+":  # '+' joins two terms; '−' negates ('cos(−x)')
            ref.space("before_operator").add("+", "operator", operation="add", form="symbol").space("after_operator")
        elif piece == "−":
            ref.add("−", "operator", operation="neg", form="symbol")
        elif piece != " ":
            kind = {"(": "punctuation", ")": "punctuation", "/": "fraction_bar", "²": "power", "π": "constant"}
            ref.add(piece, kind.get(piece, "variable"), operation=op)


def parse_trig(text: str) -> Ref | None:
    m = re.fullmatch(r"(.*(?:sin|cos|tan).*) (=|≈) (.+)", text)
    if not m:
        return None
    left, rel, right = m.groups()
    identity = bool(re.search(r"(?<![a-z])[xytθ](?![a-z])", left))
    if identity:
        assert rel == "=" and all(
            trig_value(left, v) == pytest.approx(trig_value(right, v), abs=1e-12) for v in (0.3, 1.1, -0.7)
        ), text
    elif rel == "=":
        assert trig_value(left, 0) == pytest.approx(trig_value(right, 0), abs=1e-12), text
    else:
        stated = Decimal(repr(trig_value(left, 0))).quantize(Decimal("0.01"), ROUND_HALF_UP)
        assert str(stated) == right and trig_value(left, 0) != trig_value(right, 0), text
    op = "identity" if identity else "value"
    ref = Ref("trig", op, exact=rel == "=", answer=right)
    ref_formula(ref, left, op)
    ref.relation(rel, op)
    ref_formula(ref, right, op, exact=rel == "=")
    return ref


def match_in_words(text: str):
    for relation, (lang, exact) in RELATION_WORDS.items():
        for op_words, op in OPERATOR_WORDS[lang].items():
            m = re.fullmatch(rf"(.+) {op_words} (.+) {relation} (.+)", text)
            if m and not m.group(3).startswith("environ "):  # 'égale environ' is not 'égale'
                return m.group(1), m.group(2), relation, lang, exact, op_words, op
    return None


def parse_in_words(text: str) -> Ref | None:
    """`A <operator words> B <relation words> C` with numbers in digits or words."""
    found = match_in_words(text)
    if found is None:
        return None
    a, b, relation, lang, exact, op_words, op = found
    digits = a.isdigit()
    x, y = (int(a), int(b)) if digits else (NUMBER[lang][a], NUMBER[lang][b])
    if op == "div":
        expected, exact_here = decimal_text(Fraction(x, y))
    else:
        expected, exact_here = str({"add": x + y, "sub": x - y, "mul": x * y}[op]), True
    assert exact_here == exact and (digits or exact), text
    ref = Ref(f"{'digits' if digits else 'words'}_{lang}", op, lang, exact)
    attrs = {"operation": op}
    if digits:
        ref.answer = expected
        ref.number(a, "operand", operand=1, **attrs).space("before_operator")
    else:
        assert 0 <= int(expected) <= 99, text
        ref.answer = spell(int(expected), lang)
        ref.words(a, lang, operand=1, **attrs).space("before_operator")
    ref.phrase(op_words, "operator_word", form="word", language=lang, **attrs).space("after_operator")
    if digits:
        ref.number(b, "operand", operand=2, **attrs).relation(relation, op)
        return ref.number(expected, "answer", operand=0, exact=exact, **attrs)
    ref.words(b, lang, operand=2, **attrs).relation(relation, op)
    return ref.words(ref.answer, lang, operand=0, exact=True, **attrs)


PROBLEM = {
    "en": r"(\w+) has (\d+) (\w+) and (gets|buys|gives away|loses) (\d+)( more)?\. (She|He) has (\d+)\.",
    "es": r"(\w+) tiene (\d+) (\w+) y (recibe|compra|regala|pierde) (\d+)( más)?\. ()Tiene (\d+)\.",
    "fr": r"(\w+) a (\d+) (\w+) et en (reçoit|achète|donne|perd) (\d+)( de plus)?\. (Elle|Il) a (\d+)\.",
}
ADDS = {"gets", "buys", "recibe", "compra", "reçoit", "achète"}
FEMALE = {"Ana", "Marie", "Eva", "Sofía", "Nina", "Lucía"}
MALE = {"Tom", "Luis", "Sam", "Léo", "Omar", "Hugo"}


def parse_problem(text: str) -> Ref | None:
    found = [(m, lang) for lang, pattern in PROBLEM.items() if (m := re.fullmatch(pattern, text))]
    if not found:
        return None
    m, lang = found[0]
    name, a, obj, verb, b, more, pronoun, _ = m.groups()
    op = "add" if verb in ADDS else "sub"
    assert bool(more) == (op == "add") and name in FEMALE | MALE, text
    assert pronoun in ("", "She" if name in FEMALE else "He", "Elle" if name in FEMALE else "Il"), text
    expected = str(int(a) + int(b) if op == "add" else int(a) - int(b))
    ref = Ref(f"problem_{lang}", op, lang, answer=expected)
    numbers = iter([(a, "operand", {"operand": 1}), (b, "operand", {"operand": 2})])
    answer_at = text.rindex(" ") + 1
    for piece in re.findall(r"\d+|\w+|\s|[^\w\s]", text):
        if piece.isdigit():
            if len(ref.text) == answer_at:
                ref.number(expected, "answer", operation=op, operand=0, exact=True)
            else:
                value, part, attrs = next(numbers)
                assert piece == value
                ref.number(piece, part, operation=op, **attrs)
        elif piece.isspace():
            ref.space()
        elif not piece[0].isalnum():
            ref.add(piece, "punctuation")
        else:
            kind = {name: "name", obj: "object", pronoun: "pronoun"}.get(piece, "word")
            ref.add(piece, kind, language=lang)
    return ref


PARSERS = (
    parse_binary,
    parse_simplify,
    parse_root,
    parse_constant,
    parse_compare,
    parse_linear,
    parse_trig,
    parse_in_words,
    parse_problem,
)


def reference(text: str) -> Ref:
    found = [ref for parse in PARSERS if (ref := parse(text)) is not None]
    assert len(found) == 1, f"{text!r}: {len(found)} readings"
    return found[0]


@functools.cache
def references():
    return [reference(s.text) for s in samples()]
