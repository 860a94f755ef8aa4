"""`locate`: the bound per hookpoint and position set on a tiny model, every cell against a mean
ablation by hand (`hand_scoring.py`), the table's cells against those numbers, and the command line."""

import json

import numpy as np
import pytest
import torch
from hand_scoring import assert_scores_match, task_scores

from monosemantic.cli.main import main
from monosemantic.experiments.bound import activation_means
from monosemantic.experiments.locate import run_locate
from monosemantic.experiments.positions import PositionError, parse_positions
from monosemantic.experiments.report import ci
from monosemantic.experiments.scoring import bootstrap_ci
from monosemantic.experiments.tasks import builtin_task
from monosemantic.models import load_model

HOOKS = {"layers.0.resid.pre": None, "layers.0.resid.post": 0}  # hookpoint -> block whose output it is
TEXTS = ["12 + 7 = 19", "22 ÷ 7 ≈ 3.14", "3 × 4 = 12"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tiny_model_dirs):
    model, tok = load_model(tiny_model_dirs["gpt2"])
    task = builtin_task("relation", 4)
    means = activation_means(model, tok, list(HOOKS), TEXTS)
    sites = [parse_positions(s) for s in ("relation", "answer_start", "prompt")]
    return model, tok, task, means, run_locate(model, tok, task, list(HOOKS), sites, means)


def by_hand(model, tok, task, hook, site, mean, clean_lps):
    """The task's scores with the activation at `hook` replaced by `mean` at `site`, by a hook written here."""
    if HOOKS[hook] is None:  # the embedding: the input of block 0, i.e. the output of the dropout before it
        module = model.transformer.drop
    else:
        module = model.transformer.h[HOOKS[hook]]

    def edit_for(i):
        prompt = tok(task.items[i].prompt)["input_ids"]
        chars = tok.convert_ids_to_tokens(prompt)
        at = {
            "relation": [j for j, c in enumerate(chars) if c in ("=", "≈")],
            "answer_start": [len(prompt) - 1],
            "prompt": list(range(1, len(prompt))),
        }[site]

        def edit(x):
            x = x.clone()
            x[:, at] = mean
            return x

        return edit

    return task_scores(model, tok, task.items, module, edit_for, clean_lps)[0]


@pytest.mark.parametrize("hook", list(HOOKS))
def test_every_cell_is_a_mean_ablation_by_hand(setup, hook):
    model, tok, task, means, result = setup
    clean, clean_lps = task_scores(model, tok, task.items)
    assert_scores_match(result.clean, clean)
    for site in ("relation", "answer_start", "prompt"):
        expected = by_hand(model, tok, task, hook, site, means[hook], clean_lps)
        assert_scores_match(result.cells[hook, site], expected)
        assert not np.allclose(expected["ce"], clean["ce"], rtol=0, atol=1e-4), (hook, site)
        for group, items in ((None, [0, 1, 2, 3]), ("=", [0, 2]), ("≈", [1, 3])):
            want = bootstrap_ci(expected["ce"][items] - clean["ce"][items])
            assert result.effect(hook, site, "ce", items) == pytest.approx(want), group


def test_the_table_has_a_row_per_hookpoint_and_a_column_per_position_set(setup):
    result = setup[4]
    table = result.table("ce")
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("hookpoint"))
    assert header.split() == ["hookpoint", "relation", "answer_start", "prompt"]
    rows = [line for line in lines if line.startswith("layers.")]
    assert len(rows) == 3 * len(HOOKS)  # all prompts, then the '=' and the '≈' prompts apart
    for hook, line in zip(list(HOOKS) * 3, rows):
        assert line.startswith(hook)
    first = rows[0]
    for site in ("relation", "answer_start", "prompt"):
        assert ci(result.effect("layers.0.resid.pre", site, "ce", [0, 1, 2, 3])) in first
    assert "the 2 '=' prompts (target: the exact result, contrast: the rounded one)" in table
    assert "CE loss on target, all 4 prompts: clean" in table


def test_locate_refuses_firing_and_roles_no_prompt_has(setup):
    model, tok, task, means, _ = setup
    with pytest.raises(PositionError, match="'firing' needs features"):
        run_locate(model, tok, task, ["layers.0.resid.post"], [parse_positions("firing")], means)
    with pytest.raises(PositionError, match="positions 'relaton' select no token in the 4 prompts"):
        run_locate(model, tok, task, ["layers.0.resid.post"], [parse_positions("relaton")], means)


def test_locate_command(tiny_model_dirs, tmp_path, capsys):
    out = tmp_path / "locate.json"
    argv = ["-q", "locate", "--model", str(tiny_model_dirs["gpt2"]), "--task", "relation", "--n", "4"]
    argv += ["--hookpoints", "layers.0.resid.post", "--positions", "relation", "--positions", "answer_start"]
    argv += ["--mean-documents", "5", "--metric", "ce", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "the whole activation replaced by its mean over the 5 first documents of mathlm" in printed
    assert "positions relation: tokens of role relation" in printed
    saved = json.loads(out.read_text())
    assert saved["hookpoints"] == ["layers.0.resid.post"] and list(saved["positions"]) == ["relation", "answer_start"]
    cell = saved["effects"]["all"]["ce"]["bound"]["layers.0.resid.post"]["relation"]
    assert f"{cell['mean']:.3g} [{cell['low']:.3g}, {cell['high']:.3g}]" in printed
    with pytest.raises(SystemExit):
        main(["locate", "--model", str(tiny_model_dirs["gpt2"]), "--positions", "space:colour=red"])
    assert "'colour=red' is not ATTR=VALUE with ATTR one of" in capsys.readouterr().err


def test_activation_means_skip_bos_and_keep_eos(setup):
    model, tok, *_ = setup
    ids = [tok.bos_token_id, *tok("12 + 7 = 19", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[0]
    expected = hidden[0, 1:].double().mean(0).float()
    got = activation_means(model, tok, ["layers.0.resid.pre"], ["12 + 7 = 19"])["layers.0.resid.pre"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
