"""The built-in model's tokenizer, as a standard Hugging Face `tokenizer.json`: one token per word of
the corpus' closed vocabulary (number words, operation and relation words, names, objects and verbs
in English, Spanish and French), one per digit (as Llama and GPT-4 split numbers), one per symbol
and character, and byte fallback (`<0xNN>`, as Llama's) for anything else, so every text encodes and
decodes back to itself.

It is a Unigram model: a word scores far above the characters that spell it, so a vocabulary word
is always one token, and any other word falls back to its characters:

    tok.tokenize("quince menos tres es igual a doce")
    # ['quince', ' ', 'menos', ' ', 'tres', ' ', 'es', ' ', 'igual', ' ', 'a', ' ', 'doce']
    tok.tokenize("47 - 19")  # ['4', '7', ' ', '-', ' ', '1', '9']

`<bos>` is prepended by the post-processor (so `tokenizer("3 + 4 = ")` is exactly what the model
was trained on), `<eos>` ends a document, `<pad>` fills a batch.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

from monosemantic.mathlm.language import vocabulary

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
BYTES = [f"<0x{i:02X}>" for i in range(256)]
# printable ASCII, the corpus' math symbols, and the letters of English, Spanish and French
MATH = "−×÷≈√²³πθ≤≥≠∞°·"
LATIN = "áéíóúñüÁÉÍÓÚÑÜàâçèêëîïôùûœÀÂÇÈÊËÎÏÔÙÛŒ¿¡«»"
ALPHABET = sorted(set(string.printable[:95]) | set(MATH) | set(LATIN))
WORD_SCORE, CHAR_SCORE = -1.0, -10.0  # log-probabilities: one word beats any spelling of it
MAX_LENGTH = 64


def build_tokenizer() -> PreTrainedTokenizerFast:
    words = [w for w in vocabulary() if w not in ALPHABET]
    pieces = [(t, 0.0) for t in SPECIALS + BYTES] + [(c, CHAR_SCORE) for c in ALPHABET]
    pieces += [(w, WORD_SCORE) for w in words]
    tok = Tokenizer(models.Unigram(pieces, unk_id=SPECIALS.index("<unk>"), byte_fallback=True))
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    bos = SPECIALS.index("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=MAX_LENGTH,
        padding_side="right",
    )
