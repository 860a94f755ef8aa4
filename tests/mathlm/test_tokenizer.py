"""The built-in model's tokenizer: loaded the standard way (`AutoTokenizer.from_pretrained`), a token
per word of the corpus and per digit, and every text, in the vocabulary or not, decodes back to itself."""

import random

import pytest
from transformers import AutoTokenizer

from monosemantic.mathlm.corpus import generate
from monosemantic.mathlm.language import vocabulary
from monosemantic.mathlm.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tokenizer as a model directory holds it, read back by transformers alone."""
    directory = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer().save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


def test_auto_tokenizer_reads_words_as_words(saved):
    assert saved.tokenize("quince menos tres es igual a doce") == [
        *("quince", " ", "menos", " ", "tres", " ", "es", " ", "igual", " ", "a", " ", "doce"),
    ]
    assert saved.tokenize("forty-two divided by 7 is approximately 6") == [
        *("forty", "-", "two", " ", "divided", " ", "by", " ", "7", " ", "is", " ", "approximately", " ", "6"),
    ]
    ids = saved("3 + 4 = ")["input_ids"]  # BOS first, no EOS: the prompt goes on
    assert ids[0] == saved.bos_token_id and saved.eos_token_id not in ids and len(ids) == 9


def test_every_word_is_one_token_and_every_digit_its_own(saved):
    words = set(vocabulary())
    for s in (generate(0, i) for i in range(3000)):  # and the words the corpus writes, found here
        letters = "".join(c if c.isalpha() else " " for c in s.text)
        words.update(w for w in letters.split() if len(w) > 1)
    assert len(words) > 150
    for word in sorted(words):
        assert saved.tokenize(word) == [word], word
    assert saved.tokenize("9081726354") == list("9081726354")
    assert saved.tokenize("1.75 ≈ 22 ÷ 7") == ["1", ".", "7", "5", " ", "≈", " ", "2", "2", " ", "÷", " ", "7"]


ODD_TEXTS = [
    "",
    " ",
    "héllo wörld, ça va? ¿qué tal? «oui»",
    "🤖🧮 emoji 👩‍👩‍👧",
    "日本語のテキスト 中文 한국어",
    "control \x00\x01\x07\x1b[0m\x7f tab\tnewline\nreturn\r\n",
    "accents: ÀÉÎÕÜ àéîõü ŷ ǅ ẞ ß Ω",
    "x" * 300,
    "supercalifragilisticexpialidocious" * 5,
    "zero\u200bwidth\ufeffbom \u202eright-to-left",
    "math ∑∫∂√∞ ≠ ≤ ≥ ± ∓ ¼ ½",
    "  leading and trailing spaces  ",
    "quince menos tres es igual a doce",
]


def random_texts(n: int, seed: int = 0) -> list[str]:
    """Strings of code points from all over Unicode (surrogates excluded), of random length."""
    rng = random.Random(seed)
    planes = [(0x20, 0x7F), (0xA0, 0x2FFF), (0x3000, 0xD7FF), (0xE000, 0xFFFD), (0x10000, 0x1FAFF), (0, 0x1F)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 40)):
            lo, hi = rng.choice(planes)
            chars.append(chr(rng.randint(lo, hi)))
        out.append("".join(chars))
    return out


@pytest.mark.parametrize("which", ["built", "saved"])
def test_any_text_round_trips(which, saved):
    tok = build_tokenizer() if which == "built" else saved
    for text in ODD_TEXTS + random_texts(300):
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids, repr(text)
        assert tok.decode(ids, skip_special_tokens=True) == text, repr(text)
    bytes_of = tok.tokenize("日")  # outside the alphabet: its UTF-8 bytes
    assert bytes_of == ["<0xE6>", "<0x97>", "<0xA5>"]


@pytest.mark.xfail(strict=True, reason="the byte pieces <0xNN> are in the Unigram vocabulary with the best score")
def test_text_that_spells_a_byte_token_round_trips():
    tok = build_tokenizer()
    assert tok.decode(tok("<0x41>")["input_ids"], skip_special_tokens=True) == "<0x41>"  # decodes to 'A'
