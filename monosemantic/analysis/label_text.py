"""Labels in words: each candidate rule of `labels.Scored` as a kind, a text and a JSON rule, the
label rows of the store, and each feature's label fields (label, multilingual flag, concept).

Kinds: token, 2-gram, 3-gram, any of, class; concept, concept+token (input side); next token, next
class, next concept (output side); meta (document metadata); position; and "dense" for a feature
above `labels.DENSE` density, whatever its rules. The JSON rule says exactly when the rule holds on a
token, e.g. {"kind": "concept+token", "role": {"kind": "relation", "exact": "exact"}, "token": 12}:
the token's role has kind "relation" and exact = "exact", and the token is id 12.
"""

from __future__ import annotations

import json

import torch
from torch import Tensor

from monosemantic.analysis.concepts import CLASS_FIELD, NEXT_CLASS_FIELD, concept_phrase
from monosemantic.analysis.labels import (
    DENSE,
    MAX_LANGUAGES,
    PER_NGRAM,
    POSITIONS,
    PRECISION_FLOOR,
    KeySpace,
    Names,
    Scored,
    choose_labels,
)

CONCEPT_KINDS = ("concept", "concept+token", "next concept")
TOKEN_KINDS = ("token", "2-gram", "3-gram", "any of", "next token")
NON_LANGUAGES = ("symbols",)  # language values that are no natural language (the math corpus' symbol texts)
LANGUAGE_SHARE = 0.1  # multilingual: each of >= 2 natural languages holds this share of the label's held-out hits
MIN_LANGUAGE_HITS = 3  # ... and at least this many


def quote(text: str) -> str:
    """A token's text made visible: quoted, with spaces and newlines shown."""
    return '"' + visible(text) + '"'


def visible(text: str) -> str:
    return text.replace(" ", "␣").replace("\n", "⏎")


def _role(field: str, value: object) -> dict:
    attr = field.split(":", 1)[1]
    return {"kind": value} if attr == "kind" else {"kind": value[0], attr: value[1]}


class Describer:
    """Kinds, texts and JSON rules of candidates, in the words of one analysis' vocab and names."""

    def __init__(self, vocab: list[str], space: KeySpace, names: Names):
        self.vocab, self.space, self.names = vocab, space, names

    def token(self, t: int) -> str:
        return self.vocab[t] if 0 <= t < len(self.vocab) else ""

    def describe(self, rule: tuple) -> tuple[str, str, dict]:
        """(kind, text, JSON rule) of a `Scored.rule`."""
        if rule[0] == "set":
            return (
                "any of",
                " or ".join(quote(self.token(t)) for t in rule[1]),
                {"kind": "any of", "tokens": list(rule[1])},
            )
        if rule[0] == "conj":
            _, named, token, _ = rule
            field, value = self.names.name(named - self.space.named_offset)
            text = f"{concept_phrase(field, value)} ({visible(self.token(token))})"
            return "concept+token", text, {"kind": "concept+token", "role": _role(field, value), "token": token}
        if rule[0] == "position":
            n = rule[1]
            text = "first token of a document" if n == 1 else f"first {n} tokens of a document"
            return "position", text, {"kind": "position", "first": n}
        kind, value = self.space.kind(rule[2])
        if kind == "next token":
            return kind, f"next token {quote(self.token(value))}", {"kind": kind, "token": value}
        if kind != "named":
            return kind, quote("".join(self.token(t) for t in value)), {"kind": kind, "tokens": list(value)}
        return self._named(*self.names.name(value))

    def _named(self, field: str, value: object) -> tuple[str, str, dict]:
        if field == CLASS_FIELD:
            return "class", f"a {value}", {"kind": "class", "class": value}
        if field == NEXT_CLASS_FIELD:
            return "next class", f"next token: a {value}", {"kind": "next class", "class": value}
        if field.startswith("role:"):
            return "concept", concept_phrase(field, value), {"kind": "concept", "role": _role(field, value)}
        if field.startswith("next:"):
            text = f"next token: {concept_phrase(field, value)}"
            return "next concept", text, {"kind": "next concept", "role": _role(field, value)}
        name = field.removeprefix("meta:")
        return "meta", f"{name}: {value}", {"kind": "meta", "field": name, "value": value}

    def priority(self, scored: Scored) -> Tensor:
        """[C] tie-break of equal F1: a concept with an attribute (4) before a kind alone (3), before
        output-side concepts (2), before the rest (1); a concept+token pair as its concept."""
        first = self.space.first_named_column

        def of(field: str) -> int:
            if field.startswith("role:"):
                return 3 if field == "role:kind" else 4
            return 2 if field.startswith("next:") else 1

        fields = [self.names.fields[col - first] if col >= first else "" for col in range(scored.single.shape[1])]
        out = [of(f) for f in fields for _ in range(PER_NGRAM)] + [1]  # single keys, token set
        out += [of(fields[col]) for col in scored.conj_columns] + [1] * len(POSITIONS)
        return torch.tensor(out, dtype=torch.float64)

    def concept_tokens(self, scored: Scored, i: int, rule: tuple, limit: int = 4) -> list[str]:
        """The tokens latent i fired on most (fit part) that also carry the concept of `rule`."""
        named = rule[2] if rule[0] == "key" else rule[1]
        tokens = [t for t in scored.top_tokens[i].tolist() if t >= 0]
        keys = self.space.conj_key(torch.tensor([named] * len(tokens), dtype=torch.long), torch.tensor(tokens))
        seen = scored.occurrences.get(keys).tolist() if tokens else []
        return [visible(self.token(t)) for t, n in zip(tokens, seen) if n > 0][:limit]


def label_rows(describer: Describer, scored: Scored, lo: int, per_latent: int = 8) -> list[tuple]:
    """(latent, kind, text, precision, recall, f1, support, hits, rule JSON) of each latent's
    `per_latent` candidates of best F1 among those that hold on some of its held-out firings."""
    out, described = [], {}  # many latents share rules: each is put in words once
    usable = scored.valid & (scored.hits > 0)
    best = torch.where(usable, scored.f1, -1.0).topk(min(per_latent, scored.f1.shape[1]), dim=1).indices
    chosen = torch.zeros_like(usable).scatter_(1, best, True) & usable
    rows = torch.nonzero(chosen).tolist()
    values = [t[chosen].tolist() for t in (scored.precision, scored.recall, scored.f1, scored.support, scored.hits)]
    for (i, c), p, r, f1, support, hits in zip(rows, *values):
        rule = scored.rule(i, c)
        if rule not in described:
            kind, text, spec = describer.describe(rule)
            described[rule] = kind, text, json.dumps(spec)
        out.append((lo + i, *described[rule][:2], p, r, f1, int(support), int(hits), described[rule][2]))
    return out


def label_fields(describer: Describer, scored: Scored, density: list[float], languages: list[str]) -> list[dict]:
    """Per latent: label, label_kind, precision, recall, f1, support, rule, multilingual, languages, concept."""
    best = choose_labels(scored, describer.priority(scored)).tolist()
    out = []
    for i, c in enumerate(best):
        row = dict.fromkeys(("label", "label_kind", "precision", "recall", "f1", "support", "rule", "concept"))
        row.update(multilingual=None if not languages else False, languages="{}")
        if density[i] > DENSE:
            row.update(
                label=f"dense (fires on {density[i]:.0%} of tokens)", label_kind="dense", rule='{"kind": "dense"}'
            )
        elif c >= 0:
            row.update(_label(describer, scored, i, c, languages))
        out.append(row)
    return out


def _label(describer: Describer, scored: Scored, i: int, c: int, languages: list[str]) -> dict:
    rule = scored.rule(i, c)
    kind, text, spec = describer.describe(rule)
    hits = scored.language_hits[i, :, c].tolist()
    per_language = {name: hits[j] for j, name in enumerate(languages[:MAX_LANGUAGES]) if hits[j] > 0}
    p, r = scored.precision[i, c].item(), scored.recall[i, c].item()
    multi = kind == "concept" and multilingual(per_language, int(scored.hits[i, c]), p)
    label = text
    if kind == "concept":
        tokens = describer.concept_tokens(scored, i, rule)
        label += (", any language" if multi else "") + (": " + ", ".join(tokens) if tokens else "")
    return {
        "label": label,
        "label_kind": kind,
        "precision": p,
        "recall": r,
        "f1": scored.f1[i, c].item(),
        "support": int(scored.support[i, c]),
        "rule": json.dumps(spec),
        "languages": json.dumps(per_language),
        "concept": text if kind in CONCEPT_KINDS else None,
        "multilingual": multi if languages else None,
    }


def multilingual(per_language: dict[str, int], hits: int, precision: float) -> bool:
    """A concept label holds across languages: precision >= the label floor, and >= 2 natural
    languages each hold >= LANGUAGE_SHARE of its held-out hits (and >= MIN_LANGUAGE_HITS)."""
    natural = [
        n
        for name, n in per_language.items()
        if name not in NON_LANGUAGES and n >= max(MIN_LANGUAGE_HITS, LANGUAGE_SHARE * hits)
    ]
    return precision >= PRECISION_FLOOR and len(natural) >= 2
