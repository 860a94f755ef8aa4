"""Character-level tokenizer of the built-in model, as a standard Hugging Face `tokenizer.json`.

One token per character; `<bos>` is prepended by the tokenizer's post-processor (so
`tokenizer("3 + 4 = ")` is exactly what the model was trained on), `<eos>` ends a document, `<pad>`
fills a batch, `<unk>` stands for characters outside the alphabet.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
# printable ASCII, the corpus' math symbols, and the letters of English, Spanish and French
MATH = "−×÷≈√²³πθ≤≥≠∞°·"
LATIN = "áéíóúñüÁÉÍÓÚÑÜàâçèêëîïôùûœÀÂÇÈÊËÎÏÔÙÛŒ¿¡«»"
ALPHABET = sorted(set(string.printable[:95]) | set(MATH) | set(LATIN))


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + ALPHABET)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")  # every character alone
    tok.decoder = decoders.Fuse()  # join characters back without spaces
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=64,
        padding_side="right",
    )
