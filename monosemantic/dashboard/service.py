"""What the dashboard can do with one run directory, as plain Python: every method checks its input
against `Limits`, calls the library (the feature store, `runmodel.py`, `interventions.py`) and returns
JSON-ready data. No maths here and no HTTP: `api.py` and `pages.py` serve these results.

Two locks make concurrent requests behave as if they came one after another: one around the model
(forwards, hooks), one around the feature store's SQLite connection.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from monosemantic.analysis.store import Feature, FeatureStore, Summary
from monosemantic.data.corpora import document_meta, prompt_ids
from monosemantic.errors import MonosemanticError
from monosemantic.experiments.interventions import Intervention, clamp, mean_ablate, steer, zero
from monosemantic.models import context_length
from monosemantic.runmodel import RunModel, latent_totals, top_latents
from monosemantic.train.rundir import EVAL_FILE, read_metrics

KINDS = ("zero", "mean", "clamp", "steer")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; beyond these the dashboard answers 413 or 400 at once."""

    body_bytes: int = 1 << 20  # request body
    text_chars: int = 4096
    tokens: int = 256  # tokens of a text (and no more than the model's context)
    top_k: int = 32  # features per token
    text_features: int = 64  # features listed for a whole text
    features: int = 16  # interventions in one playground request
    strength: float = 1000.0  # |clamp value| and |steering alpha|
    new_tokens: int = 32  # greedy continuation
    listed: int = 500  # features per search or list
    traced: int = 64  # documents per trace


class RequestError(MonosemanticError, ValueError):
    """A request the dashboard refuses; `status` is its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise RequestError(f"{name} = {value} is out of range; expected {low:g} to {high:g}")


class Dashboard:
    """The feature store and the model of one run directory, loaded once, shared by all requests."""

    def __init__(self, run_dir: str | Path, *, device: str = "cpu", limits: Limits = Limits()):
        self.run_dir = Path(run_dir)
        self.limits = limits
        self.store = FeatureStore.open(self.run_dir)
        self.run_model = RunModel.of_run(self.run_dir, self.store.settings["corpus"], device)
        self.model_lock, self.db_lock = threading.Lock(), threading.Lock()
        context = context_length(self.run_model.model)
        self.max_tokens = min(limits.tokens, context) if context else limits.tokens
        self.text("1 + 1 = 2", k=1)  # warm-up: the first real request should not pay for kernel setup

    @property
    def n_latents(self) -> int:
        return self.store.n_latents

    def check_feature(self, i: int, *, status: int = 404) -> None:
        if not 0 <= i < self.n_latents:
            raise RequestError(f"feature {i} does not exist; this SAE has features 0-{self.n_latents - 1}", status)

    def _ids(self, text: str, *, spare: int = 0) -> list[int]:
        """Token ids of `text` (the model lock held), refused beyond the token limit."""
        if len(text) > self.limits.text_chars:
            raise RequestError(f"text of {len(text)} characters; the dashboard takes at most {self.limits.text_chars}")
        ids = prompt_ids(self.run_model.tokenizer, text)
        limit = self.max_tokens - spare
        if len(ids) > limit:
            raise RequestError(
                f"the text has {len(ids)} tokens; the dashboard takes at most {limit} here "
                f"({self.max_tokens} in all{', with the continuation' if spare else ''})"
            )
        return ids

    def text(self, text: str, k: int = 5, features: int = 32) -> dict:
        """Per token its k most active features; the text's features by total activation."""
        _check_range("k", k, 1, self.limits.top_k)
        _check_range("features", features, 1, self.limits.text_features)
        with self.model_lock:
            lat = self.run_model.text_latents(self._ids(text))
        with self.db_lock:  # dense features rank after all others
            dense = self.store.dense_latents()
            top, totals = top_latents(lat.z, k, dense), latent_totals(lat.z, features, dense)
            names = self.store.labels(sorted({j for row in top for j, _ in row} | {t.latent for t in totals}))
        return {
            "tokens": [
                {"token": tok, "features": [{"id": j, "act": v, "label": names.get(j)} for j, v in row]}
                for tok, row in zip(lat.tokens, top)
            ],
            "features": [{**asdict(t), "id": t.latent, "label": names.get(t.latent)} for t in totals],
        }

    def feature(self, i: int) -> Feature:
        self.check_feature(i)
        with self.db_lock:
            return self.store.feature(i)

    def label(self, i: int) -> str | None:
        with self.db_lock:
            return self.store.labels([i]).get(i)

    def feature_acts(self, i: int, text: str) -> dict:
        """Feature i's activation on every token of `text` ("try your own text")."""
        self.check_feature(i)
        with self.model_lock:
            lat = self.run_model.text_latents(self._ids(text))
        return {"tokens": lat.tokens, "acts": lat.z[:, i].tolist()}

    def search(self, query: str, limit: int = 50) -> list[dict]:
        """Features by id ("123" or "#123"), then by label, label rules, top tokens and contexts."""
        _check_range("limit", limit, 1, self.limits.listed)
        query = query.strip()
        if not query:
            raise RequestError("empty search; give a word, a token such as '=', or a feature number")
        number = query.removeprefix("#")
        first = [self.summary(int(number))] if number.isdigit() and int(number) < self.n_latents else []
        with self.db_lock:
            rest = [asdict(s) for s in self.store.search(query, limit) if s.index not in {f["index"] for f in first}]
        return (first + rest)[:limit]

    def summary(self, i: int) -> dict:
        """Feature i's label, precision, recall, density and max activation (a search result row)."""
        f = self.feature(i)
        return asdict(
            Summary(
                f.index,
                f.label and f.label.text,
                f.label and f.label.precision,
                f.label and f.label.recall,
                f.density,
                f.max_act,
                f.label and f.label.kind,
            )
        )

    def listing(self, order: str = "f1", limit: int = 50, labelled: bool = False) -> list[dict]:
        _check_range("limit", limit, 1, self.limits.listed)
        with self.db_lock:
            return [asdict(s) for s in self.store.list(order, limit, labelled)]

    def trace(self, i: int, n: int = 8) -> list[dict]:
        self.check_feature(i)
        _check_range("n", n, 1, self.limits.traced)
        with self.db_lock:
            return [asdict(t) for t in self.store.trace(i, n)]

    def document(self, doc: int, feature: int | None = None) -> dict:
        """Document `doc` of the analysed corpus, with `feature`'s activation on each of its tokens."""
        if feature is not None:
            self.check_feature(feature, status=400)
        with self.db_lock:
            found = self.store.document(doc)
        out = {"doc": doc, "text": found.text, "meta": document_meta(found)}
        if feature is not None:
            with self.model_lock:
                out |= asdict(self.run_model.document_activations(found, feature))
        return out

    def interventions(self, specs: list[dict]) -> list[Intervention]:
        """[{"feature", "kind", "value"}] -> library interventions (mean ablation to the store's means)."""
        _check_range("number of interventions", len(specs), 0, self.limits.features)
        out = []
        for spec in specs:
            i, kind, value = spec["feature"], spec["kind"], spec.get("value", 0.0)
            self.check_feature(i, status=400)
            if kind not in KINDS:
                raise RequestError(f"intervention {kind!r} is unknown; expected one of {', '.join(KINDS)}")
            _check_range(f"{kind} value of feature {i}", value, -self.limits.strength, self.limits.strength)
            if kind == "zero":
                out.append(zero(i))
            elif kind == "mean":
                with self.db_lock:
                    out.append(mean_ablate(i, self.store.mean_activation([i])))
            else:
                out.append(clamp(i, value) if kind == "clamp" else steer(i, value))
        return out

    def playground(self, prompt: str, specs: list[dict], new_tokens: int = 16, top: int = 10) -> dict:
        """Next-token distribution and greedy continuation of `prompt`, without and with interventions."""
        _check_range("new_tokens", new_tokens, 0, self.limits.new_tokens)
        _check_range("top", top, 1, 50)
        edits = self.interventions(specs)
        with self.model_lock:
            ids = self._ids(prompt, spare=new_tokens)
            before = self.run_model.predict(ids, (), top=top, new_tokens=new_tokens)
            after = self.run_model.predict(ids, edits, top=top, new_tokens=new_tokens)
        return {
            "prompt_tokens": len(ids),
            "before": asdict(before),
            "after": asdict(after),
            "interventions": [
                {"kind": e.kind, "feature": e.latents[0], "value": e.values[0] if e.values else None} for e in edits
            ],
        }

    def run(self) -> dict:
        """The run's SAE config, training config and curves, evaluation and feature-store summary."""

        def read(name: str) -> dict | None:
            path = self.run_dir / name
            return json.loads(path.read_text()) if path.is_file() else None

        with self.db_lock:
            summary = {
                "features": self.store.count(),
                "labelled_090": self.store.count(min_precision=0.9),
                "tokens": self.store.tokens,
                "settings": self.store.settings,
            }
        return {
            "name": self.run_dir.name,
            "sae": read("cfg.json"),
            "train": read("train_config.json"),
            "eval": read(EVAL_FILE),
            "metrics": read_metrics(self.run_dir),
            "store": summary,
            "max_tokens": self.max_tokens,
            "limits": asdict(self.limits),
        }
