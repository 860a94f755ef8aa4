"""Where an intervention applies: named position sets, resolved per task item, and scoring a task
with an intervention whose positions differ from item to item.

    all            every position after BOS (prompt and answer tokens; BOS is never touched: the SAE
                   never saw it in training)
    firing         the positions after BOS where any of the intervention's features fires, in the
                   forward being run (greedy answer tokens included)
    prompt         the prompt's tokens after BOS
    answer_start   the prompt's last token: the position whose output is the answer's first token
    answer         the answer's tokens (teacher forced or generated), from the first one on
    KIND[:ATTR=VALUE,...]   the prompt tokens whose corpus role is KIND (alternatives joined by |)
                   with those attributes, as `tasks.role_positions` selects them: `relation`,
                   `relation|relation_word`, `relation:exact=true`, `space:where=after_relation`

    site = parse_positions("relation:exact=true")
    positions = site.at(item, tokenizer, latents)     # what `Intervention.positions` takes
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from monosemantic.data.corpora import prompt_ids
from monosemantic.errors import MonosemanticError
from monosemantic.experiments.interventions import Firing, Positions
from monosemantic.experiments.scoring import Scores, score
from monosemantic.experiments.tasks import Task, TaskItem
from monosemantic.mathlm.corpus import Role
from monosemantic.mathlm.roles import prompt_roles

NAMED = {
    "all": "every position after BOS",
    "firing": "where an intervened feature fires",
    "prompt": "the prompt's tokens after BOS",
    "answer_start": "the prompt's last token (it predicts the answer's first)",
    "answer": "the answer's tokens",
}
ROLE_ATTRIBUTES = sorted(set(Role.__dataclass_fields__) - {"kind"})


class PositionError(MonosemanticError, ValueError):
    """A position set that cannot be read, or cannot apply to a task's items."""


def _value(text: str) -> object:
    """A role attribute's value as the corpus stores it: true/false, an integer, or text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class PositionSet:
    """A named set of positions (`NAMED`), or the prompt tokens of some roles with some attributes."""

    name: str
    kinds: tuple[str, ...] = ()
    attrs: tuple[tuple[str, object], ...] = ()

    @property
    def is_role(self) -> bool:
        return bool(self.kinds)

    def describe(self) -> str:
        if not self.is_role:
            return NAMED[self.name]
        where = ", ".join(f"{k}={v}" for k, v in self.attrs)
        return f"tokens of role {' or '.join(self.kinds)}" + (f" with {where}" if where else "")

    def at(self, item: TaskItem, tokenizer, latents: Sequence[int] = ()) -> Positions:
        """The positions of this set in `item`'s sequence (BOS at 0), for an intervention on `latents`."""
        if self.name == "all":
            return slice(1, None)
        if self.name == "firing":
            return Firing(tuple(int(i) for i in latents))
        n_prompt = len(prompt_ids(tokenizer, item.prompt))
        if self.name == "prompt":
            return slice(1, n_prompt)
        if self.name == "answer_start":
            return [n_prompt - 1] if n_prompt > 1 else []
        if self.name == "answer":
            return slice(n_prompt, None)
        if item.sample is None:
            raise PositionError(
                f"positions {self.name!r} select tokens by their corpus role, but task item {item.prompt!r} has "
                "none (it comes from a file); use all, firing, prompt, answer_start or answer"
            )
        attrs = dict(self.attrs)
        return [
            i
            for i, role in enumerate(prompt_roles(item.sample, tokenizer))
            if i > 0 and role.kind in self.kinds and all(getattr(role, k) == v for k, v in attrs.items())
        ]


def parse_positions(spec: str) -> PositionSet:
    """'all', 'firing', 'prompt', 'answer_start', 'answer', or KIND[|KIND...][:ATTR=VALUE,...]."""
    text = spec.strip()
    if text in NAMED:
        return PositionSet(text)
    kinds_text, _, attrs_text = text.partition(":")
    kinds = tuple(k.strip() for k in kinds_text.split("|"))
    if not all(k.replace("_", "").isalpha() for k in kinds):
        raise PositionError(
            f"positions {spec!r}: expected {', '.join(NAMED)}, or a token role such as relation, "
            "relation|relation_word or space:where=after_relation"
        )
    attrs = []
    for pair in filter(None, (p.strip() for p in attrs_text.split(","))):
        key, eq, value = pair.partition("=")
        if not eq or key.strip() not in ROLE_ATTRIBUTES:
            raise PositionError(
                f"positions {spec!r}: {pair!r} is not ATTR=VALUE with ATTR one of {', '.join(ROLE_ATTRIBUTES)}"
            )
        attrs.append((key.strip(), _value(value.strip())))
    return PositionSet(text, kinds, tuple(attrs))


def _key(positions: Positions) -> tuple:
    """A hashable key: items whose positions have the same key run in one batch."""
    if isinstance(positions, slice):
        return ("slice", positions.start, positions.stop, positions.step)
    if isinstance(positions, Firing):
        return ("firing", positions.latents, _key(positions.within))
    if positions is None:
        return ("every",)
    return ("at", tuple(int(i) for i in positions))


def same_positions(where: list[Positions]) -> list[list[int]]:
    """The indices of `where`, grouped by equal positions (each group can run as one batch)."""
    groups: dict[tuple, list[int]] = {}
    for i, positions in enumerate(where):
        groups.setdefault(_key(positions), []).append(i)
    return list(groups.values())


def is_empty(positions: Positions) -> bool:
    return not isinstance(positions, (slice, Firing)) and positions is not None and len(positions) == 0


def score_at(
    model,
    tokenizer,
    task: Task,
    where: list[Positions],
    condition: Callable[[Positions], contextlib.AbstractContextManager],
    clean: Scores,
    clean_logp: list,
) -> Scores:
    """The task's scores with `condition(positions)` active, each item at its own `where[i]`: items
    with the same positions run together. An item with no position to touch keeps its clean scores
    (nothing in the model changes for it)."""
    out = Scores.empty(len(task.items))
    for idx in same_positions(where):
        if is_empty(where[idx[0]]):
            out.put(idx, clean.take(idx))
            continue
        part = Task(task.name, [task.items[i] for i in idx])
        with condition(where[idx[0]]):
            out.put(idx, score(model, tokenizer, part, [clean_logp[i] for i in idx])[0])
    return out


def touched(where: list[Positions]) -> int | None:
    """How many items have a position to touch; None where that depends on the forward (firing)."""
    if any(isinstance(p, Firing) for p in where):
        return None
    return sum(not is_empty(p) for p in where)


def resolve(site: PositionSet, task: Task, tokenizer, latents: Sequence[int] = ()) -> list[Positions]:
    """`site`'s positions in every item of `task`; a role set that selects nothing anywhere is an error
    (a misspelt role would otherwise look like an intervention that changes nothing)."""
    where = [site.at(item, tokenizer, latents) for item in task.items]
    if site.is_role and touched(where) == 0:
        kinds = sorted({r.kind for item in task.items[:50] for r in prompt_roles(item.sample, tokenizer)})
        raise PositionError(
            f"positions {site.name!r} select no token in the {len(where)} prompts of task {task.name!r}; "
            f"their tokens have roles {', '.join(kinds)}"
        )
    return where
