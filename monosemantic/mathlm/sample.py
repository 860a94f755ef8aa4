"""A sample of the math corpus and how it is written: `Role` (what a span of text is), `Span`,
`Sample` (text, document metadata, answer span, roles; its symbol and ASCII forms) and `Builder`,
which the problem generators (`problems.py`) use to write a text span by span, each span with its role.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from monosemantic.mathlm.language import LANGUAGE_NAMES, RELATION_WORDS, number_words, word_value

MINUS, TIMES, DIVIDE = "−", "×", "÷"  # U+2212, U+00D7, U+00F7
OPERATOR_SYMBOLS = {"add": "+", "sub": MINUS, "mul": TIMES, "div": DIVIDE}
ASCII_ALIASES = {MINUS: ["-"], TIMES: ["*", "x"], DIVIDE: ["/"]}  # what users type
ASCII_SHARE = 0.4  # of the operators that have an ASCII alias
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
        # the fields in order from __dict__ (flat values): dataclasses.asdict's deep copy made this the
        # analysis' hottest call (every token of every document it reads)
        return {k: v for k, v in self.__dict__.items() if v is not None}

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


class Builder:
    """Builds a text span by span, each span with its role."""

    def __init__(self, rng: random.Random):
        self.rng, self.text, self.spans = rng, "", []
        self.answer_start = self.answer_end = -1
        self.form = "symbol"

    def add(self, piece: str, role: Role) -> Builder:
        if piece:
            self.spans.append(Span(len(self.text), len(self.text) + len(piece), role))
            self.text += piece
        return self

    def space(self, where: str | None = None) -> Builder:
        return self.add(" ", Role("space", where=where))

    def digits(self, text: str, kind: str, **attrs) -> Builder:
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

    def words(self, n: int, lang: str, **attrs) -> Builder:
        for piece in number_words(n, lang):
            own = word_value(piece, lang)  # None for the joiners: "-", " ", "y", "et"
            if own is not None:
                self.add(piece, Role("number_word", value=n, word_value=own, language=lang, **attrs))
            else:
                self.add(piece, Role("number_joiner", value=n, language=lang, **attrs))
        return self

    def phrase(self, text: str, kind: str, **attrs) -> Builder:
        """Words of a phrase ("es igual a"), each a span of `kind`, spaces between them in_phrase."""
        for i, word in enumerate(text.split(" ")):
            if i:
                self.space("in_phrase")
            self.add(word, Role(kind, **attrs))
        return self

    def operator(self, operation: str) -> Builder:
        symbol = OPERATOR_SYMBOLS[operation]
        if symbol in ASCII_ALIASES and self.rng.random() < ASCII_SHARE:
            self.form = "ascii"
            return self.add(self.rng.choice(ASCII_ALIASES[symbol]), Role("operator", operation, form="ascii"))
        return self.add(symbol, Role("operator", operation, form="symbol"))

    def relation(self, exact: bool, operation: str, lang: str | None = None) -> Builder:
        self.space("before_relation")
        if lang is None:
            self.add("=" if exact else "≈", Role("relation", operation, exact=exact, form="symbol"))
        else:
            words = RELATION_WORDS[exact][lang]
            self.phrase(words, "relation_word", operation=operation, exact=exact, form="word", language=lang)
        return self.space("after_relation")

    def answer(self, build: Callable[[], object]) -> Builder:
        self.answer_start = len(self.text)
        build()
        self.answer_end = len(self.text)
        return self
