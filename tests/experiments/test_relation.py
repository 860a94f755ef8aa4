"""The relation task: the same operands after `=` and `≈`, checked against arithmetic done here and the
corpus' split; its scoring on hand-built items whose answers are known (a tiny model made to answer
'333', or '444' when steered); and where steering moves the answers, against steering by hand."""

import re

import numpy as np
import pytest
import torch
from hand_scoring import task_scores

from monosemantic.experiments.positions import parse_positions
from monosemantic.experiments.relation import relation_pairs
from monosemantic.experiments.scoring import score
from monosemantic.experiments.steer import answer_shift
from monosemantic.experiments.tasks import Task, TaskItem, builtin_task, role_positions
from monosemantic.mathlm.corpus import split_of
from monosemantic.mathlm.tokenizer import build_tokenizer
from monosemantic.models import load_model
from monosemantic.sae import SAEConfig, create_sae

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = re.compile(r"(\d+) ([+−]) (\d+) ([=≈]) ")


def test_pairs_are_the_same_operands_with_either_relation():
    task = builtin_task("relation", 12)
    assert len(task.items) == 12 and task.groups == ["=", "≈"]
    tok = build_tokenizer()
    for eq, approx in zip(task.items[::2], task.items[1::2]):
        x, op, y, rel = PROMPT.fullmatch(eq.prompt).groups()
        assert rel == "=" and approx.prompt == eq.prompt.replace("=", "≈") and (eq.group, approx.group) == ("=", "≈")
        exact = int(x) + int(y) if op == "+" else int(x) - int(y)
        rounded = (exact + 5) // 10 * 10  # to the nearest ten, halves up
        assert exact >= 0 and exact != rounded
        assert (eq.target, eq.contrast, approx.target, approx.contrast) == (
            str(exact),
            str(rounded),
            str(rounded),
            str(exact),
        )
        assert split_of(eq.sample) == split_of(approx.sample) == "heldout"
        for item, is_exact in ((eq, True), (approx, False)):
            assert item.sample.text == item.prompt + item.target and item.sample.exact is is_exact
            tokens = tok.convert_ids_to_tokens(tok(item.prompt)["input_ids"])
            [at] = role_positions(item, tok, "relation", exact=is_exact)
            assert tokens[at] == ("=" if is_exact else "≈")
    problems = [i.prompt for i in task.items[::2]]
    assert len(set(problems)) == len(problems)
    assert [i.prompt for i in builtin_task("relation_exact", 6).items] == problems
    assert [i.prompt for i in builtin_task("relation_approximate", 6).items] == [i.prompt for i in task.items[1::2]]
    assert relation_pairs(6, seed=1) != relation_pairs(6, seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_model_dirs):
    """The tiny random GPT-2 with +10 on the logits of '3' and '4' (a hook on lm_head written here): it
    answers '333', and '444' once latent 3 of the SAE below is steered by -30."""
    model, tok = load_model(tiny_model_dirs["gpt2"])
    boost = torch.zeros(model.lm_head.out_features)
    boost[tok.convert_tokens_to_ids(["3", "4"])] = 10.0
    handle = model.lm_head.register_forward_hook(lambda _module, _args, logits: logits + boost)
    yield model, tok
    handle.remove()


def greedy(model, tok, prompt, n):
    seq = tok(prompt)["input_ids"]
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
            if seq[-1] == tok.eos_token_id:
                break
    return tok.decode(seq[len(tok(prompt)["input_ids"]) :], skip_special_tokens=True)


def test_answers_are_scored_by_which_of_the_two_they_are(tiny):
    model, tok = tiny
    prompt = "347 + 589 = "
    assert greedy(model, tok, prompt, 3) == "333"
    task = Task(
        "hand",
        [
            TaskItem(prompt, "333", "444", group="="),  # answered with the target
            TaskItem(prompt, "444", "333", group="="),  # answered with the contrast
            TaskItem(prompt, "444", "111", group="≈"),  # neither
            TaskItem(prompt, "333", "334", group="≈"),  # the logit difference is at the third token
        ],
    )
    scores, _ = score(model, tok, task)
    np.testing.assert_array_equal(scores.greedy, [1, 0, 0, 1])
    np.testing.assert_array_equal(scores.contrast, [0, 1, 0, 0])
    expected, lps = task_scores(model, tok, task.items)
    np.testing.assert_allclose(scores.logit_diff, expected["logit_diff"], rtol=1e-4, atol=1e-5)
    three, four = tok.convert_tokens_to_ids(["3", "4"])
    assert scores.logit_diff[0] == pytest.approx((lps[0][0, three] - lps[0][0, four]).item(), rel=1e-4)
    assert scores.logit_diff[3] == pytest.approx((lps[3][2, three] - lps[3][2, four]).item(), rel=1e-4)


def test_steering_moves_answers_between_the_two(tiny):
    model, tok = tiny
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=32, d_sae=64, k=4, hookpoint="layers.0.resid.post")).eval()
    pairs = builtin_task("relation", 4).items
    # '=' asks for 333 (the model's own answer), '≈' for 444 (what steering by -30 makes it say)
    answers = {"=": ("333", "444"), "≈": ("444", "333")}
    items = [TaskItem(i.prompt, *answers[i.group], i.sample, i.group) for i in pairs]
    task = Task("hand relation", items)
    shift = answer_shift(model, tok, sae, 3, [0.0, -30.0], task, parse_positions("all"))
    clean, _ = score(model, tok, task)
    np.testing.assert_array_equal(shift.target[0], clean.greedy)
    np.testing.assert_array_equal(shift.contrast[0], clean.contrast)
    np.testing.assert_array_equal(shift.target[0], [1, 0, 1, 0])
    steered = [greedy_steered(model, tok, sae, item.prompt, 3, -30.0, 3) for item in task.items]
    assert steered == ["444"] * 4
    np.testing.assert_array_equal(shift.target[1], [0, 1, 0, 1])
    np.testing.assert_array_equal(shift.contrast[1], [1, 0, 1, 0])
    approx = shift.shares(1, [1, 3])
    assert approx["target"][0] == 1.0 and approx["contrast"][0] == 0.0 and approx["other"][0] == 0.0
    table = shift.table()
    assert "the 2 '≈' prompts (target: the rounded result, contrast: the exact one)" in table
    assert "answer = contrast" in table


def greedy_steered(model, tok, sae, prompt, latent, alpha, n):
    """Greedy continuation with alpha x the latent's decoder row added after BOS, by a hook written here."""
    direction = alpha * sae.W_dec[latent].detach()

    def hook(_module, _args, out):
        hidden = out[0] if isinstance(out, tuple) else out
        hidden = torch.cat([hidden[:, :1], hidden[:, 1:] + direction], dim=1)
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = model.transformer.h[0].register_forward_hook(hook)
    try:
        return greedy(model, tok, prompt, n)
    finally:
        handle.remove()
