"""The closed vocabulary of the math corpus in English, Spanish and French: number words 0-99,
operation and relation phrases, and the word problems' names, objects and templates.

The tokenizer gives every word here one token (`tokenizer.py`), so a concept like "times" / "por" /
"fois" is one token in each language.

    number_words(42, "en") -> ["forty", "-", "two"]
    number_words(42, "es") -> ["cuarenta", " ", "y", " ", "dos"]
    number_words(71, "fr") -> ["soixante", " ", "et", " ", "onze"]
"""

from __future__ import annotations

import re

LANGUAGES = ("en", "es", "fr")
LANGUAGE_NAMES = {"symbols": "symbols", "en": "English", "es": "Spanish", "fr": "French"}

_EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ES_ONES = (
    "cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince dieciséis "
    "diecisiete dieciocho diecinueve veinte veintiuno veintidós veintitrés veinticuatro veinticinco veintiséis "
    "veintisiete veintiocho veintinueve"
).split()
_ES_TENS = "_ _ _ treinta cuarenta cincuenta sesenta setenta ochenta noventa".split()
_FR_ONES = "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize".split()
_FR_TENS = "_ _ vingt trente quarante cinquante soixante".split()


def _fr(n: int) -> list[str]:
    if n < 17:
        return [_FR_ONES[n]]
    if n < 20:
        return ["dix", "-", _FR_ONES[n - 10]]
    if n >= 80:
        rest = n - 80
        return ["quatre", "-", "vingts"] if rest == 0 else ["quatre", "-", "vingt", "-", *_fr(rest)]
    tens, rest = (n // 10, n % 10) if n < 60 else (6, n - 60)
    if rest == 0:
        return [_FR_TENS[tens]]
    if rest in (1, 11):
        return [_FR_TENS[tens], " ", "et", " ", _FR_ONES[rest]]
    return [_FR_TENS[tens], "-", *_fr(rest)]


def number_words(n: int, lang: str) -> list[str]:
    """The words of 0 <= n <= 99 in `lang`, as pieces (words, hyphens and spaces) that join to the text."""
    if not 0 <= n <= 99:
        raise ValueError(f"number words cover 0-99, got {n}")
    if lang == "en":
        return [_EN_ONES[n]] if n < 20 else [_EN_TENS[n // 10]] + (["-", _EN_ONES[n % 10]] if n % 10 else [])
    if lang == "es":
        return [_ES_ONES[n]] if n < 30 else [_ES_TENS[n // 10]] + ([" ", "y", " ", _ES_ONES[n % 10]] if n % 10 else [])
    if lang == "fr":
        return _fr(n)
    raise ValueError(f"language must be one of {LANGUAGES}, got {lang!r}")


def word_value(word: str, lang: str) -> int | None:
    """The value a single number word stands for on its own ("forty" -> 40, "vingts" -> 20), else None."""
    return _WORD_VALUES[lang].get(word)


_WORD_VALUES: dict[str, dict[str, int]] = {
    "en": {**{w: i for i, w in enumerate(_EN_ONES)}, **{w: 10 * i for i, w in enumerate(_EN_TENS) if i >= 2}},
    "es": {**{w: i for i, w in enumerate(_ES_ONES)}, **{w: 10 * i for i, w in enumerate(_ES_TENS) if i >= 3}},
    "fr": {
        **{w: i for i, w in enumerate(_FR_ONES)},
        **{w: 10 * i for i, w in enumerate(_FR_TENS) if i >= 2},
        "vingts": 20,
    },
}

OPERATION_WORDS = {  # operation -> language -> the operator phrase
    "add": {"en": "plus", "es": "más", "fr": "plus"},
    "sub": {"en": "minus", "es": "menos", "fr": "moins"},
    "mul": {"en": "times", "es": "por", "fr": "fois"},
    "div": {"en": "divided by", "es": "dividido entre", "fr": "divisé par"},
}
RELATION_WORDS = {  # exact? -> language -> the relation phrase
    True: {"en": "equals", "es": "es igual a", "fr": "égale"},
    False: {"en": "is approximately", "es": "es aproximadamente", "fr": "égale environ"},
}

NAMES = [("Ana", "f"), ("Tom", "m"), ("Luis", "m"), ("Marie", "f"), ("Sam", "m"), ("Eva", "f"), ("Léo", "m")]
NAMES += [("Sofía", "f"), ("Omar", "m"), ("Nina", "f"), ("Hugo", "m"), ("Lucía", "f")]
OBJECTS = {
    "en": ["apples", "books", "coins", "cards", "pens", "stamps", "marbles", "shells"],
    "es": ["manzanas", "libros", "monedas", "cartas", "lápices", "sellos", "canicas", "conchas"],
    "fr": ["pommes", "livres", "pièces", "cartes", "stylos", "timbres", "billes", "coquillages"],
}
PRONOUNS = {"en": {"f": "She", "m": "He"}, "fr": {"f": "Elle", "m": "Il"}, "es": {"f": "", "m": ""}}
PROBLEMS = {  # (language, operation) -> templates; {name} {a} {obj} {b} {p} (pronoun) and {ANS}
    ("en", "add"): [
        "{name} has {a} {obj} and gets {b} more. {p} has {ANS}.",
        "{name} has {a} {obj} and buys {b} more. {p} has {ANS}.",
    ],
    ("en", "sub"): [
        "{name} has {a} {obj} and gives away {b}. {p} has {ANS}.",
        "{name} has {a} {obj} and loses {b}. {p} has {ANS}.",
    ],
    ("es", "add"): [
        "{name} tiene {a} {obj} y recibe {b} más. Tiene {ANS}.",
        "{name} tiene {a} {obj} y compra {b} más. Tiene {ANS}.",
    ],
    ("es", "sub"): [
        "{name} tiene {a} {obj} y regala {b}. Tiene {ANS}.",
        "{name} tiene {a} {obj} y pierde {b}. Tiene {ANS}.",
    ],
    ("fr", "add"): [
        "{name} a {a} {obj} et en reçoit {b} de plus. {p} a {ANS}.",
        "{name} a {a} {obj} et en achète {b} de plus. {p} a {ANS}.",
    ],
    ("fr", "sub"): [
        "{name} a {a} {obj} et en donne {b}. {p} a {ANS}.",
        "{name} a {a} {obj} et en perd {b}. {p} a {ANS}.",
    ],
}
FUNCTIONS = ["sin", "cos", "tan", "vs"]


def vocabulary() -> list[str]:
    """Every word of the corpus (each becomes one token), sorted."""
    words: set[str] = set(FUNCTIONS)
    for lang in LANGUAGES:
        for n in range(100):
            words.update(number_words(n, lang))
        for table in (OPERATION_WORDS, RELATION_WORDS):
            for by_lang in table.values():
                words.update(by_lang[lang].split())
        words.update(OBJECTS[lang])
        words.update(PRONOUNS[lang].values())
        for (template_lang, _), templates in PROBLEMS.items():
            if template_lang == lang:
                for t in templates:
                    words.update(re.findall(r"\w+", re.sub(r"\{\w+\}", " ", t)))
    words.update(name for name, _ in NAMES)
    return sorted(w for w in words if re.fullmatch(r"\w\w+", w))
