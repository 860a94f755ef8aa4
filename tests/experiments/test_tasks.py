"""Built-in tasks select by the relation's token role, so word forms ("equals", "es igual a", "égale
environ") count with `=` and `≈`; `role_positions` finds a role's tokens in a prompt. Checked against
the prompts' text, read here with regular expressions."""

import functools
import re

import pytest

from monosemantic.data.corpora import prompt_ids
from monosemantic.experiments import tasks
from monosemantic.experiments.tasks import TaskError, TaskItem, builtin_task, role_positions
from monosemantic.mathlm.corpus import generate, split_of
from monosemantic.mathlm.tokenizer import build_tokenizer

EXACT = re.compile(r"(?:=|equals|es igual a|égale) $")
APPROXIMATE = re.compile(r"(?:≈|is approximately|es aproximadamente|égale environ) $")


@functools.cache
def documents():
    return [generate(0, i) for i in range(6000)]


class EveryDocument:
    """Stands in for the held-out split with every document of the stream: the rare forms (a division
    in Spanish words with an inexact answer) occur in a few thousand documents, not in a few hundred."""

    def __init__(self, split: str = "heldout", seed: int = 0):
        pass

    def documents(self, start: int = 0, limit: int | None = None):
        return iter(documents())


@pytest.fixture
def every_document(monkeypatch):
    monkeypatch.setattr(tasks, "MathCorpus", EveryDocument)


def test_builtin_tasks_come_from_the_held_out_split():
    for item in builtin_task("equality", 20).items + builtin_task("approximation", 10).items:
        assert split_of(item.sample) == "heldout" and (EXACT if item.sample.exact else APPROXIMATE).search(item.prompt)


@pytest.mark.parametrize(
    ("name", "pattern", "words"),
    [
        ("equality", EXACT, ("equals ", "es igual a ", "égale ")),
        ("approximation", APPROXIMATE, ("is approximately ", "es aproximadamente ", "égale environ ")),
    ],
)
def test_relation_tasks_take_every_form_of_the_relation(name, pattern, words, every_document):
    task = builtin_task(name, 10**6)
    prompts = [item.prompt for item in task.items]
    assert prompts == [s.prompt for s in documents() if pattern.search(s.prompt)]
    for phrase in words:
        assert any(p.endswith(phrase) for p in prompts), phrase
    for item in task.items:
        assert item.prompt + item.target == item.sample.prompt + item.sample.answer
        assert item.sample.text.startswith(item.prompt + item.target)


def test_role_positions_find_the_tokens_of_a_role(every_document):
    tok = build_tokenizer()
    items = builtin_task("equality", 10**6).items
    spanish = next(i for i in items if i.prompt.endswith("es igual a "))
    tokens = tok.convert_ids_to_tokens(prompt_ids(tok, spanish.prompt))
    at = role_positions(spanish, tok, "relation_word", exact=True)
    assert [tokens[i] for i in at] == ["es", "igual", "a"] and at[-1] == len(tokens) - 2  # then a space
    assert role_positions(spanish, tok, "relation_word", exact=False) == []
    [space] = role_positions(spanish, tok, "space", where="after_relation")
    assert space == len(tokens) - 1
    for item in items:
        if re.fullmatch(r"\d+ [−×÷+*x/-] \d+ = ", item.prompt):
            first = item.prompt.split(" ")[0]
            tokens = tok.convert_ids_to_tokens(prompt_ids(tok, item.prompt))
            assert role_positions(item, tok, "operand_digit", operand=1) == list(range(1, 1 + len(first)))
            assert [tokens[i] for i in role_positions(item, tok, "relation")] == ["="]
            assert [tokens[i] for i in role_positions(item, tok, "operator")] == [item.prompt.split(" ")[1]]
    linear = next(i for i in items if i.sample.category == "linear")  # 'x + 3 = 7, x = ': two relations
    tokens = tok.convert_ids_to_tokens(prompt_ids(tok, linear.prompt))
    assert role_positions(linear, tok, "relation") == [j for j, t in enumerate(tokens) if t == "="]


def test_role_positions_need_a_sample_and_known_attributes(every_document):
    tok = build_tokenizer()
    with pytest.raises(TaskError, match="task item '1 \\+ 1 = ' has no corpus sample"):
        role_positions(TaskItem("1 + 1 = ", "2"), tok, "relation")
    item = builtin_task("equality", 1).items[0]
    with pytest.raises(TaskError, match=r"roles have no attribute\(s\) \['colour'\]"):
        role_positions(item, tok, "relation", colour="red")
    assert item == TaskItem(item.prompt, item.target, item.contrast)  # the sample is not part of equality
