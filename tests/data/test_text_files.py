"""Text corpora that are not what they should be (issue 18, case 6): bytes that are not UTF-8 are named by
file, line and byte offset; a very long line is read, and tokenized, in bounded pieces (one 10 MB line
made the tokenizer take 4.4 GB), and nothing of it is lost."""

import pytest

from monosemantic.data import corpora
from monosemantic.data.corpora import ENCODE_CHARS, MAX_LINE_BYTES, CorpusError, TextFileCorpus, encode
from monosemantic.mathlm.tokenizer import build_tokenizer

WORDS = "douze plus sept égale dix-neuf 12 + 7 = 19 πρόσθεση "  # multibyte characters too


def test_a_line_longer_than_the_bound_comes_in_pieces_that_lose_nothing(tmp_path):
    line = WORDS * (3 * MAX_LINE_BYTES // len(WORDS.encode()))  # about 3 MiB, no newline
    (tmp_path / "long.txt").write_text(f"1 + 1 = 2\n{line}\n2 + 2 = 4\n", encoding="utf-8")
    docs = list(TextFileCorpus(tmp_path / "long.txt").documents())
    assert [d.id for d in docs] == list(range(len(docs)))
    assert docs[0].text == "1 + 1 = 2" and docs[-1].text == "2 + 2 = 4"
    pieces = [d.text for d in docs[1:-1]]
    assert len(pieces) >= 3
    assert all(len(p.encode()) <= MAX_LINE_BYTES for p in pieces)
    assert "".join(pieces) == line


class Recording:
    """A real tokenizer that remembers the longest text it was given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.longest = tokenizer, 0
        self.bos_token_id, self.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id

    def __call__(self, text, **kwargs):
        self.longest = max(self.longest, len(text))
        return self.tokenizer(text, **kwargs)


def test_a_long_document_is_tokenized_in_bounded_pieces_to_the_same_tokens():
    tokenizer = build_tokenizer()  # splits at spaces, so pieces cut after one give the same tokens
    text = WORDS * (4 * ENCODE_CHARS // len(WORDS))
    recording = Recording(tokenizer)
    ids = encode(recording, text)
    assert recording.longest <= ENCODE_CHARS
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == [tokenizer.bos_token_id, *whole, tokenizer.eos_token_id]


def test_invalid_utf8_is_named_by_file_line_and_byte_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "MAX_LINE_BYTES", 64)  # the bad byte lies in a later piece of its line
    head = b"1 + 1 = 2\n"
    line = (b"12 + 7 = 19 " * 13)[:150] + b"\xff end\n"
    (tmp_path / "bad.txt").write_bytes(head + line)
    corpus = TextFileCorpus(tmp_path / "bad.txt")  # the first document reads fine
    with pytest.raises(CorpusError, match=rf"bad\.txt:2: invalid UTF-8 at byte {len(head) + 150} of the file"):
        list(corpus.documents())
