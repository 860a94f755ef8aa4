"""Label rules: candidates from the fit tokens, precision and recall on held-out tokens, counted by hand."""

import pytest
import torch

from monosemantic.analysis.labels import MIN_SUPPORT, KeySpace, LabelStats, MetaVocab, rule_keys

BOS, PAD = 0, 9


def rows(*token_rows):
    width = max(len(tokens) for _, tokens in token_rows)
    ids = torch.full((len(token_rows), width), PAD)
    docs = torch.full((len(token_rows), width), -1)
    for r, (doc, tokens) in enumerate(token_rows):
        ids[r, : len(tokens)] = torch.tensor(tokens)
        docs[r, : len(tokens)] = doc
    return ids, docs, (docs >= 0) & (ids != BOS)


def feed(stats, space, meta, doc_meta, token_rows, fires_on):
    """`fires_on`: (row, col) cells where latent 0 fires."""
    ids, docs, kept = token_rows
    keys = rule_keys(space, meta, ids, docs, kept, doc_meta)
    cells = torch.nonzero(kept).tolist()
    tok = torch.tensor([cells.index([r, c]) for r, c in fires_on])
    stats.update(keys, tok, torch.zeros_like(tok))


@pytest.fixture
def scored():
    space, meta = KeySpace(10, 1), MetaVocab()
    doc_meta = {
        d: meta.keys({"language": lang})
        for d, lang in [(0, "en"), (1, "es"), (10, "en"), (11, "es"), (12, "en"), (13, "en")]
    }
    stats = LabelStats(1, space, meta, fit_tokens=8)
    # fit: fires on '5' three times and on '6' twice
    fit = rows((0, [BOS, 3, 5, 4, 5, 6]), (1, [BOS, 5, 6, 2]))
    feed(stats, space, meta, doc_meta, fit, [(0, 2), (0, 4), (0, 5), (1, 1), (1, 2)])
    assert not stats.fitting
    held = rows((10, [BOS, 3, 5, 4, 5]), (11, [BOS, 5, 6, 5]))
    feed(stats, space, meta, doc_meta, held, [(0, 2), (0, 4), (1, 1), (1, 2)])
    # more held-out text where the rules hold often enough to qualify as labels
    more = rows((12, [BOS, 5, 5, 5, 6, 1]), (13, [BOS, 1, 1, 1]))
    feed(stats, space, meta, doc_meta, more, [(0, 1), (0, 2), (0, 3), (0, 4)])
    return space, meta, stats.scored()


def rule(space, meta, scored, kind, value):
    for c in range(scored.keys.shape[1]):
        keys = [k for k in scored.keys[0, c].tolist() if k >= 0]
        named = [space.kind(k) for k in keys]
        if kind == "set" and len(keys) > 1 and {t for _, (t,) in named} == set(value):
            return c
        if len(keys) == 1 and named[0][0] == kind:
            found = named[0][1] if kind != "meta" else meta.name(named[0][1])
            if found == value:
                return c
    raise AssertionError(f"no candidate {kind} {value}")


def test_precision_and_recall_match_a_count_by_hand(scored):
    space, meta, s = scored
    # held-out: tokens 3 5 4 5 | 5 6 5 | 5 5 5 6 1 | 1 1 1 ; fires on 5 5 | 5 6 | 5 5 5 6 -> 8 firings
    assert s.fires.tolist() == [8]
    c = rule(space, meta, s, "token", (5,))  # '5' occurs 7 times, 6 of them firing
    assert (s.support[0, c], s.hits[0, c]) == (7, 6)
    assert s.precision[0, c].item() == pytest.approx(6 / 7) and s.recall[0, c].item() == pytest.approx(6 / 8)
    c = rule(space, meta, s, "set", (5, 6))  # '5' or '6': 9 occurrences, 8 firing
    assert s.precision[0, c].item() == pytest.approx(8 / 9) and s.recall[0, c].item() == pytest.approx(1.0)
    c = rule(space, meta, s, "2-gram", (5, 6))  # the fit's most frequent 2-gram; twice, both firing
    assert (s.support[0, c], s.hits[0, c]) == (2, 2)
    c = rule(space, meta, s, "meta", ("language", "es"))  # the 3 tokens of doc 11, 2 firing
    assert s.precision[0, c].item() == pytest.approx(2 / 3) and s.recall[0, c].item() == pytest.approx(2 / 8)


def test_the_label_is_the_best_f1_among_rules_with_support(scored):
    space, meta, s = scored
    best = s.best()[0].item()
    assert best == rule(space, meta, s, "set", (5, 6))
    f1 = 2 * s.precision * s.recall / (s.precision + s.recall).clamp(min=1e-12)
    assert all(f1[0, c] <= f1[0, best] for c in range(f1.shape[1]) if s.support[0, c] >= MIN_SUPPORT)


def test_ngram_keys_name_their_tokens():
    space = KeySpace(10, 3)
    ids, docs, kept = rows((0, [BOS, 3, 5, 4]))
    keys = space.ngram_keys(ids, docs, kept)
    assert [space.kind(k) for k in keys[1].tolist()] == [("token", (5,)), ("2-gram", (3, 5)), ("3-gram", (0, 3, 5))]
    assert space.kind(int(keys[0, 2])) == ("3-gram", (10, 0, 3))  # before the row: "no token" (id = vocab size)


def test_large_vocabularies_cap_the_ngram_order():
    assert KeySpace(50_257, 65_536).max_order == 2
    assert KeySpace(200, 16_384).max_order == 3
