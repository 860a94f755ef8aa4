"""Task sets for causal experiments: prompts with the target the model should produce next.

Built-in tasks come from the held-out math corpus, its metadata and its token roles:
    equality          the answer after an exact relation: "=", "equals", "es igual a", "égale"
    approximation     the answer after an approximate one: "≈", "is approximately", "égale environ", ...
    addition, subtraction, multiplication, division   (any language)
    english, spanish, french, symbols                 (any operation)
    relation          the same operands after `=` and after `≈` (`347 + 589 = ` -> 936, `347 + 589 ≈ ` -> 940),
                      each item's contrast the other relation's answer; relation_exact and
                      relation_approximate are its `=` and its `≈` halves (`relation.py`)
User tasks are JSONL files, one {"prompt": ..., "target": ..., "contrast": ...} per line ("contrast"
optional: a wrong answer whose first token the logit difference compares against).

A built-in task's items keep their corpus sample, so `role_positions(item, tokenizer, "relation")`
finds the prompt tokens of a role (the positions an intervention on a concept touches).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from monosemantic.errors import MonosemanticError
from monosemantic.experiments.relation import relation_pairs
from monosemantic.mathlm.corpus import MathCorpus, Role, Sample
from monosemantic.mathlm.roles import answer_relation, prompt_roles

OPERATIONS = {"addition": "add", "subtraction": "sub", "multiplication": "mul", "division": "div"}
LANGUAGES = {"english": "en", "spanish": "es", "french": "fr", "symbols": "symbols"}
RELATION_TASKS = {"relation": ("=", "≈"), "relation_exact": ("=",), "relation_approximate": ("≈",)}
BUILTIN_TASKS = ("equality", "approximation", *OPERATIONS, *LANGUAGES, *RELATION_TASKS)


class TaskError(MonosemanticError, ValueError):
    """An unknown task, or a task file that cannot be read."""


@dataclass(frozen=True)
class TaskItem:
    prompt: str
    target: str
    contrast: str | None = None
    sample: Sample | None = field(default=None, compare=False, repr=False)
    """the corpus sample of a built-in task's item (its token roles); None for items from a file"""
    group: str | None = None
    """the part of the task the item belongs to, reported apart: the relation task's '=' and '≈'"""


@dataclass
class Task:
    name: str
    items: list[TaskItem]

    @property
    def groups(self) -> list[str]:
        """The items' groups, in order of first appearance ([] when no item has one)."""
        return list(dict.fromkeys(i.group for i in self.items if i.group is not None))


def _selects(name: str):
    if name in ("equality", "approximation"):
        exact = name == "equality"
        return lambda s: (relation := answer_relation(s)) is not None and relation.exact is exact
    if name in OPERATIONS:
        return lambda s: s.operation == OPERATIONS[name]
    return lambda s: s.language == LANGUAGES[name]


def contrast_of(answer: str) -> str | None:
    """A wrong answer differing in its first character: the next digit (9 -> 0) or letter; None otherwise."""
    for i, ch in enumerate(answer):
        if ch.isdigit():
            return answer[:i] + str((int(ch) + 1) % 10) + answer[i + 1 :]
        if ch.isalpha() and ch.isascii():
            base = ord("a") if ch.islower() else ord("A")
            return answer[:i] + chr(base + (ord(ch) - base + 1) % 26) + answer[i + 1 :]
        if ch not in "−-":
            return None
    return None


def builtin_task(name: str, n: int = 200, seed: int = 0, max_documents: int = 1_000_000) -> Task:
    if name not in BUILTIN_TASKS:
        raise TaskError(
            f"unknown task {name!r}; built-in tasks are {', '.join(BUILTIN_TASKS)}, "
            'or give a .jsonl file of {"prompt", "target", "contrast"} lines'
        )
    if name in RELATION_TASKS:
        return relation_task(name, n, seed)
    keep = _selects(name)
    items: list[TaskItem] = []
    sample: Sample
    for i, sample in enumerate(MathCorpus("heldout", seed=seed).documents()):
        if keep(sample):
            items.append(TaskItem(sample.prompt, sample.answer, contrast_of(sample.answer), sample))
            if len(items) >= n:
                break
        if i >= max_documents:
            break
    return Task(name, items)


def relation_task(name: str, n: int = 200, seed: int = 0) -> Task:
    """`relation`: n items, n/2 problems each after `=` and after `≈` (rounded up); `relation_exact`,
    `relation_approximate`: n items, the `=` or the `≈` half of the same problems."""
    relations = RELATION_TASKS[name]
    items = []
    for pair in relation_pairs(-(-n // len(relations)), seed):
        for sample in pair:
            relation = "=" if sample.exact else "≈"
            if relation in relations:
                other = pair[1] if sample.exact else pair[0]
                items.append(TaskItem(sample.prompt, sample.answer, other.answer, sample, relation))
    return Task(name, items)


def role_positions(item: TaskItem, tokenizer, kind: str, **attrs) -> list[int]:
    """Positions of the prompt tokens whose role is `kind` (and has the attributes `attrs`, e.g.
    exact=True), in the prompt as the model reads it (`data.corpora.prompt_ids`: BOS at 0).

        role_positions(item, tok, "relation_word", exact=True)  # "es igual a": three positions
    """
    if item.sample is None:
        raise TaskError(f"task item {item.prompt!r} has no corpus sample, so no token roles (it comes from a file)")
    fields = set(Role.__dataclass_fields__)
    unknown = sorted(set(attrs) - fields)
    if unknown:
        raise TaskError(f"roles have no attribute(s) {unknown}; they have {sorted(fields - {'kind'})}")
    return [
        i
        for i, role in enumerate(prompt_roles(item.sample, tokenizer))
        if role.kind == kind and all(getattr(role, k) == v for k, v in attrs.items())
    ]


def task_from_file(path: str | Path, n: int | None = None) -> Task:
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task file {path} does not exist")
    items = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{path}:{line_no}: not JSON ({e.msg})") from e
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("prompt"), str)
            or not isinstance(row.get("target"), str)
        ):
            raise TaskError(
                f'{path}:{line_no}: expected an object with string "prompt" and "target" '
                f'(and optional "contrast"), got {line.strip()[:80]!r}'
            )
        if not row["target"]:
            raise TaskError(f'{path}:{line_no}: empty "target"')
        contrast = row.get("contrast")
        if contrast is not None and not isinstance(contrast, str):
            raise TaskError(f'{path}:{line_no}: "contrast" must be a string, got {contrast!r}')
        items.append(TaskItem(row["prompt"], row["target"], contrast or None))
    if not items:
        raise TaskError(f"{path}: no task items")
    return Task(path.stem, items[:n])


def load_task(spec: str, n: int = 200, seed: int = 0) -> Task:
    """A built-in task by name, or a .jsonl task file."""
    if spec.endswith(".jsonl") or Path(spec).is_file():
        return task_from_file(spec, n)
    return builtin_task(spec, n, seed)
