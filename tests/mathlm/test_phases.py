"""A second phase of training: starts from the first phase's weights, follows its own corpus mixture,
and exports the history of both phases (configs, one cumulative log)."""

import json
from collections import Counter

import pytest
import torch

from monosemantic.mathlm.config import MathLMConfig
from monosemantic.mathlm.corpus import DEFAULT_WEIGHTS, GENERATORS, MathCorpus, generate, mixture_weights

pytestmark = pytest.mark.integration  # trains whole (tiny) models: see tests/conftest.py

TINY = MathLMConfig(
    n_layer=2, d_model=32, n_head=2, tokens=512 * 6, batch_tokens=512, eval_every=6, checkpoint_every=3, bf16=False
)


def test_mixture_overrides_only_the_named_generators():
    weights = mixture_weights({"add_3d": 100.0, "trig": 0.0})
    names = list(GENERATORS)
    for name, w, default in zip(names, weights, DEFAULT_WEIGHTS):
        assert w == {"add_3d": 100.0, "trig": 0.0}.get(name, default)
    assert generate(0, 5, DEFAULT_WEIGHTS) == generate(0, 5)
    only = Counter(
        d.category for d in MathCorpus("train", 1, {n: 0.0 for n in names if n != "mul"}).documents(limit=50)
    )
    assert set(only) == {"mul"}
    with pytest.raises(ValueError, match="unknown corpus generator"):
        mixture_weights({"add_4d": 1.0})
    with pytest.raises(ValueError, match="NAME=WEIGHT"):
        MathLMConfig(mixture="add_3d:5").mixture_weights()
    assert MathLMConfig(mixture="add_3d=60, sub_3d=40").mixture_weights() == {"add_3d": 60.0, "sub_3d": 40.0}


@pytest.mark.slow  # minutes of whole-run training on 2 cores: `make test-slow` (CI runs it)
def test_a_second_phase_starts_from_the_first_and_exports_both(tmp_path):
    from monosemantic.mathlm import train as lm_train
    from monosemantic.models import load_model

    first = lm_train.train_mathlm(TINY, tmp_path / "one", progress=False)
    second_cfg = MathLMConfig(**{**TINY.__dict__, "init_from": str(first), "mixture": "add_3d=50", "seed": 1})

    # the second phase's step 0 is the first phase's weights (checked on a copy of the recipe)
    from monosemantic.mathlm.tokenizer import build_tokenizer

    tok = build_tokenizer()
    start = lm_train.build_model(second_cfg, len(tok), tok)
    lm_train.init_weights(start, second_cfg)
    done, _ = load_model(first)
    for (name, x), (_, y) in zip(start.state_dict().items(), done.state_dict().items()):
        assert torch.equal(x, y), name

    second = lm_train.train_mathlm(second_cfg, tmp_path / "two", progress=False)
    phases = json.loads((second / "phases.json").read_text())
    assert [p["config"]["init_from"] for p in phases] == ["", str(first)]
    rows = [json.loads(r) for r in (second / "log.jsonl").read_text().splitlines()]
    first_rows = (first / "log.jsonl").read_text().splitlines()
    assert [r["phase"] for r in rows] == [0] * len(first_rows) + [1] * (len(rows) - len(first_rows))
    tokens = [r["tokens"] for r in rows]
    assert tokens == sorted(tokens) and tokens[-1] == 2 * TINY.tokens // TINY.batch_tokens * TINY.batch_tokens
    trained, _ = load_model(second)
    assert any(not torch.equal(x, y) for x, y in zip(trained.state_dict().values(), done.state_dict().values()))

    with pytest.raises(ValueError, match="expected a model directory"):
        lm_train.train_mathlm(
            MathLMConfig(**{**TINY.__dict__, "init_from": str(tmp_path)}), tmp_path / "x", progress=False
        )
