"""Token roles where the pipeline meets them: a harvested token's provenance (document id, position in
the document) or a task's prompt, back to the Role the corpus generator gave it.

    role_of(corpus, doc_id, position, tokenizer)   # Role | None (None outside the math corpus)
    document_roles(corpus, doc_id, tokenizer)      # every token of a document, as `pack` numbers them
    prompt_roles(sample, tokenizer)                # every token of a sample's prompt, as `prompt_ids` has it
    answer_relation(sample)                        # the `=` / `≈` / "equals" ... before the answer

Positions count tokens as `data.corpora.encode` gives them (BOS at 0 when the tokenizer has one, EOS
last): the positions of `Packed` batches, activation provenance and feature examples. A token's role is
the role of the character its offset starts at (`corpus.token_roles`), so this works for any fast
tokenizer, the built-in model's or another model's.
"""

from __future__ import annotations

from monosemantic.data.corpora import CorpusShard
from monosemantic.mathlm.corpus import MathCorpus, Role, Sample


def math_corpus(corpus: object) -> MathCorpus | None:
    """The math corpus behind `corpus` (itself, or the corpus a data-parallel shard reads), else None."""
    while isinstance(corpus, CorpusShard):
        corpus = corpus.corpus
    return corpus if isinstance(corpus, MathCorpus) else None


def text_roles(sample: Sample, tokenizer, text: str, *, eos: bool) -> list[Role]:
    """Roles of the tokens of `text`, a prefix of `sample.text` (or all of it), as
    `data.corpora.encode` (eos=True) or `prompt_ids` (eos=False) tokenizes it: the tokenizer's own
    special tokens where it adds them, BOS first and EOS last where it does not."""
    if not sample.text.startswith(text):
        raise ValueError(f"{text!r} is not a prefix of sample {sample.id}'s text {sample.text!r}")
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    return _encoded_roles(sample, tokenizer, enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"], eos)


def samples_roles(samples: list[Sample], tokenizer) -> list[list[Role]]:
    """`text_roles(sample, tokenizer, sample.text, eos=True)` of each sample, their texts tokenized in
    one call (the tokenizer's per-call overhead was most of the cost of one text at a time)."""
    if not samples:
        return []
    enc = tokenizer(
        [s.text for s in samples], add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True
    )
    return [
        _encoded_roles(s, tokenizer, ids, offsets, special, True)
        for s, ids, offsets, special in zip(
            samples, enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
        )
    ]


def _encoded_roles(sample: Sample, tokenizer, ids: list[int], offsets, specials, eos: bool) -> list[Role]:
    bos, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    roles = [
        _special(tokenizer, i) if special else sample.role_at(start)
        for i, (start, _), special in zip(ids, offsets, specials)
    ]
    if not eos and ids and ids[-1] == end and roles[-1].kind == "eos":  # prompt_ids drops a trailing EOS
        ids, roles = ids[:-1], roles[:-1]
    if bos is not None and (not ids or ids[0] != bos):
        ids, roles = [bos, *ids], [Role("bos"), *roles]
    if eos and end is not None and (not ids or ids[-1] != end):
        roles.append(Role("eos"))
    return roles


def _special(tokenizer, token_id: int) -> Role:
    if token_id == tokenizer.bos_token_id:
        return Role("bos")
    return Role("eos") if token_id == tokenizer.eos_token_id else Role("special")


def document_roles(corpus: object, doc_id: int, tokenizer) -> list[Role] | None:
    """The role of every token of document `doc_id`, by position; None if `corpus` is not the math corpus."""
    math = math_corpus(corpus)
    if math is None:
        return None
    sample = math.sample(doc_id)
    return text_roles(sample, tokenizer, sample.text, eos=True)


def role_of(corpus: object, doc_id: int, position: int, tokenizer) -> Role | None:
    """The role of token `position` of document `doc_id` (a harvested token's provenance); None if
    `corpus` is not the math corpus."""
    roles = document_roles(corpus, doc_id, tokenizer)
    if roles is None:
        return None
    if not 0 <= position < len(roles):
        raise IndexError(f"position {position} is outside document {doc_id} ({len(roles)} tokens)")
    return roles[position]


def prompt_roles(sample: Sample, tokenizer) -> list[Role]:
    """The role of every token of `sample.prompt` as the model reads it (`data.corpora.prompt_ids`)."""
    return text_roles(sample, tokenizer, sample.prompt, eos=False)


def answer_relation(sample: Sample) -> Role | None:
    """The role of the relation the answer follows (`=`, `≈`, "equals", "es aproximadamente", ...: the
    last relation token of the prompt), None if there is none (word problems, comparisons)."""
    relations = [
        span.role
        for span in sample.spans
        if span.end <= sample.answer_start and span.role.kind in ("relation", "relation_word")
    ]
    return relations[-1] if relations else None
