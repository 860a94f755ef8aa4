"""What the dashboard can do with one run directory, as plain Python: every method checks its input
against `Limits`, calls the library (the feature store, `runmodel.py`, `interventions.py`) and returns
JSON-ready data. No maths here and no HTTP: `api.py` and `pages.py` serve these results.

Two locks make concurrent requests behave as if they came one after another: one around the model
(forwards, hooks), one around the feature store's SQLite connection.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from monosemantic.analysis.cooccurrence import cooccurring
from monosemantic.analysis.dictionary_density import density_histogram
from monosemantic.analysis.loss_effect import load_loss_effects
from monosemantic.analysis.predicted import load_predicted, ranked_logit_effects
from monosemantic.analysis.store import Feature, FeatureStore, StoreError, Summary
from monosemantic.data.corpora import document_meta, prompt_ids
from monosemantic.errors import MonosemanticError
from monosemantic.experiments.interventions import Intervention, Positions, clamp, mean_ablate, steer, zero
from monosemantic.experiments.scoring import AFTER_BOS
from monosemantic.experiments.steer import most_raised_token, prompt_logprobs, steered_logprobs
from monosemantic.models import context_length
from monosemantic.runmodel import RunModel, latent_totals, top_latents
from monosemantic.train.rundir import EVAL_FILE, METRICS_FILE, TRAIN_CONFIG_FILE, read_metrics

KINDS = ("zero", "mean", "clamp", "steer")
SORTS = ("rank", "index", "label", "precision", "recall", "density", "max_act", "fires")
# search hides features that fire on fewer analysed tokens than this: their labels and precision are
# measured on too few activations to trust (a label with precision 0.00037 on 15 activations)
SUPPORT_FLOOR = 20


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


def shown(value: object) -> str:
    """A value as a message shows it: an integer of more than 40 digits by its length (a request may
    send 10**400; str() refuses integers of over 4300 digits)."""
    if not isinstance(value, int) or abs(value) < 10**40:
        return str(value)
    digits = len(str(abs(value))) if value.bit_length() < 13000 else "over 3900"
    return f"{'minus ' if value < 0 else ''}an integer of {digits} digits"


def _check_range(name: str, value: float, low: float, high: float) -> None:
    # compared as given: ints against floats exactly (no float(value), which overflows at 10**309);
    # NaN fails every comparison
    if not low <= value <= high:
        raise RequestError(f"{name} = {shown(value)} is out of range; expected {low:g} to {high:g}")


def _check_unicode(name: str, text: str) -> None:
    """JSON may carry a lone surrogate ("\\ud800"), which no tokenizer or UTF-8 encoder takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(
            f"{name} has a lone surrogate (U+{ord(text[e.start]):04X}) at character {e.start}; expected valid Unicode"
        ) from None


class Dashboard:
    """The feature store and the model of one run directory, loaded once, shared by all requests."""

    def __init__(self, run_dir: str | Path, *, device: str = "cpu", limits: Limits = Limits()):
        self.run_dir = Path(run_dir)
        self.limits = limits
        self.store = FeatureStore.open(self.run_dir)
        self.run_model = RunModel.of_run(self.run_dir, self.store.settings["corpus"], device)
        self.model_lock, self.db_lock = threading.Lock(), threading.Lock()
        self._example_docs: tuple[tuple[str, ...], frozenset[int]] = ((), frozenset())
        context = context_length(self.run_model.model)
        self.max_tokens = min(limits.tokens, context) if context else limits.tokens
        self.text("1 + 1 = 2", k=1)  # warm-up: the first real request should not pay for kernel setup

    @property
    def n_latents(self) -> int:
        return self.store.n_latents

    def check_feature(self, i: int, *, status: int = 404) -> None:
        if not 0 <= i < self.n_latents:
            raise RequestError(
                f"feature {shown(i)} does not exist; this SAE has features 0-{self.n_latents - 1}", status
            )

    def _ids(self, text: str, *, spare: int = 0, name: str = "text") -> list[int]:
        """Token ids of `text` (the model lock held), refused beyond the token limit."""
        if len(text) > self.limits.text_chars:
            raise RequestError(
                f"{name} of {len(text)} characters; the dashboard takes at most {self.limits.text_chars}"
            )
        _check_unicode(name, text)
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

    def logit_effects(self, i: int) -> dict | None:
        """Feature i's direct logit effects ranked within the tokens the model predicts on the analysed
        corpus (`analysis/predicted.py`); None for a store analysed before that set was recorded."""
        self.check_feature(i)
        predicted = load_predicted(self.store.directory)
        if predicted is None:
            return None
        with self.model_lock:
            return ranked_logit_effects(self.run_model, predicted, i)

    def density_comparison(self, i: int) -> dict:
        """Feature i's density beside the histogram of all features' densities (`dictionary_density.py`)."""
        self.check_feature(i)
        with self.db_lock:
            densities = self.store.column("density")
        return {"density": densities[i], **density_histogram(densities)}

    def cooccurring(self, i: int) -> dict | None:
        """Feature i's most frequent partners on the analysed tokens (`analysis/cooccurrence.py`), each with
        its label; None for a store analysed before they were counted."""
        self.check_feature(i)
        found = cooccurring(self.store.directory, i, self.store.manifest["shard_latents"], self.n_latents)
        if found is not None:
            with self.db_lock:
                labels = self.store.labels([p["feature"] for p in found["partners"]])
            found["partners"] = [{**p, "label": labels.get(p["feature"])} for p in found["partners"]]
        return found

    def loss_effect(self, i: int) -> dict | None:
        """The next tokens whose loss rises most when feature i is ablated on its top examples
        (`analysis/loss_effect.py`); None for a store analysed before they were recorded."""
        self.check_feature(i)
        return load_loss_effects(self.store.directory, i, self.store.manifest["shard_latents"], self.n_latents)

    def label(self, i: int) -> str | None:
        with self.db_lock:
            return self.store.labels([i]).get(i)

    def feature_acts(self, i: int, text: str) -> dict:
        """Feature i's activation on every token of `text` ("try your own text")."""
        self.check_feature(i)
        with self.model_lock:
            lat = self.run_model.text_latents(self._ids(text))
        return {"tokens": lat.tokens, "acts": lat.z[:, i].tolist()}

    def search(
        self, query: str, limit: int = 50, offset: int = 0, sort: str = "rank", floor: int = SUPPORT_FLOOR
    ) -> dict:
        """Features by id ("123" or "#123"), then by label (best F1 first), label rules, top tokens and
        contexts; those firing on fewer than `floor` analysed tokens are hidden (counted in `hidden`),
        `sort` by a column, one page of `limit` from `offset`, each with the fields that `matched`."""
        _check_range("limit", limit, 1, self.limits.listed)
        _check_range("offset", offset, 0, self.limits.listed)
        _check_range("floor", floor, 0, 10**12)
        if sort not in SORTS:
            raise RequestError(f"cannot sort by {sort!r}; expected one of {', '.join(SORTS)}")
        query = query.strip()
        if not query:
            raise RequestError("empty search; give a word, a token such as '=', or a feature number")
        if "\x00" in query:  # SQLite's full-text query parser stops at a NUL ("unterminated string")
            raise RequestError(f"search has a NUL character (\\x00) at character {query.index(chr(0))}; remove it")
        _check_unicode("search", query)
        number = query.removeprefix("#")
        first = [self.summary(int(number))] if number.isdigit() and int(number) < self.n_latents else []
        with self.db_lock:
            rest = [asdict(s) for s in self.store.search(query, self.limits.listed)]
        rest = [s for s in rest if s["index"] not in {f["index"] for f in first}]
        kept = first + [s for s in rest if s["fires"] >= floor]
        if sort != "rank":  # numbers high to low, ids and labels A to Z, no label last
            known = sorted(
                (s for s in kept if s[sort] is not None), key=lambda s: s[sort], reverse=sort not in ("index", "label")
            )
            kept = known + [s for s in kept if s[sort] is None]
        page = kept[offset : offset + limit]
        with self.db_lock:
            matched = self.store.matched(query, [s["index"] for s in page])
        for s in page:
            s["matched"] = (["number"] if first and s["index"] == first[0]["index"] else []) + matched[s["index"]]
        return {
            "query": query,
            "total": len(kept),
            "hidden": len(first) + len(rest) - len(kept),
            "floor": floor,
            "offset": offset,
            "sort": sort,
            "results": page,
        }

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
                f.fires,
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
        """Document `doc` of the analysed corpus, with `feature`'s activation on each of its tokens; only
        a document one of the store's examples comes from (404 for any other)."""
        if feature is not None:
            self.check_feature(feature, status=400)
        with self.db_lock:
            # the math corpus makes a document for any number: serving one the analysis never read
            # would pass off made-up text as training data
            if doc not in self.example_documents():
                raise RequestError(
                    f"document {shown(doc)} holds none of the feature store's examples; the dashboard serves "
                    "only the documents the analysis took examples from (each example links to its own)",
                    404,
                )
            found = self.store.document(doc)
        out = {"doc": doc, "text": found.text, "meta": document_meta(found)}
        if feature is not None:
            with self.model_lock:
                out |= asdict(self.run_model.document_activations(found, feature))
        return out

    def example_documents(self) -> frozenset[int]:
        """The documents the feature store holds an example from (top or sampled, of any feature), read
        from the shard files once per set of finished shards (an analysis still running adds some).
        Call with the db lock held."""
        key = tuple(sorted(self.store.manifest["shards"]))
        if key != self._example_docs[0]:
            docs: set[int] = set()
            for name in key:
                path = self.store.directory / name
                try:
                    with safe_open(path, "pt") as f:
                        for array in ("top_doc", "sample_doc"):  # [latents, slots], -1 where a slot is empty
                            docs.update(f.get_tensor(array).unique().tolist())
                except (OSError, SafetensorError) as e:
                    raise StoreError(f"{path}: cannot read its examples ({e}); rerun `monosemantic analyze`") from e
            docs.discard(-1)
            self._example_docs = (key, frozenset(docs))
        return self._example_docs[1]

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
            ids = self._ids(prompt, spare=new_tokens, name="prompt")
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

    def dose_response(self, prompt: str, feature: int, alpha: float, position: str = "all", steps: int = 9) -> dict:
        """The playground's strength sweep: steering `feature` by `steps` alphas from 0 to `alpha` at
        `position` ("all" tokens after BOS, "last", or a token index), the probability of the target
        token next after `prompt` and KL(clean || steered), as `experiments.steer` computes them; the
        target is the token that steering by `alpha` raises most."""
        self.check_feature(feature, status=400)
        _check_range("alpha", alpha, -self.limits.strength, self.limits.strength)
        _check_range("steps", steps, 2, 33)
        with self.model_lock:
            ids = self._ids(prompt, name="prompt")
            where = self._position(position, len(ids))
            run, args = self.run_model, (self.run_model.model, self.run_model.tokenizer, self.run_model.sae)
            target = most_raised_token(*args, feature, alpha, [prompt], [where])
            clean = prompt_logprobs(run.model, run.tokenizer, [prompt])[0]
            alphas = [alpha * k / (steps - 1) for k in range(steps)]
            curve = [steered_logprobs(*args, feature, a, [prompt], [where])[0] for a in alphas]
        return {
            "feature": feature,
            "position": position,
            "target": run.vocab[target],
            "alphas": alphas,
            "p_target": [float(logp[target].exp()) for logp in curve],
            "kl": [float((clean.exp() * (clean - logp)).sum()) for logp in curve],
        }

    @staticmethod
    def _position(position: str, n: int) -> Positions:
        """ "all" (every token after BOS), "last", or a token index in 1..n-1 (0 is BOS: the SAE never saw it)."""
        if position == "all":
            return AFTER_BOS
        if position == "last":
            return [n - 1]
        if position.isdigit() and 1 <= int(position) < n:
            return [int(position)]
        raise RequestError(f"position {position!r}; expected 'all', 'last' or a token index from 1 to {n - 1}")

    def run_file(self, name: str) -> Path | None:
        """RUN_DIR/name if it is a regular file whose real path lies inside the run directory, else
        None: a link out of it (to /etc/passwd, say) is never followed."""
        root = self.run_dir.resolve()
        path = (root / name).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None

    def _read_json(self, name: str, problems: dict[str, str]) -> dict | None:
        """RUN_DIR/name as a JSON object; None if absent, and None with a line in `problems` if it is
        not a regular file inside the run directory or not a JSON object."""
        path = self.run_file(name)
        if path is None:
            if os.path.lexists(self.run_dir / name):
                problems[name] = "not a regular file inside the run directory; not read"
            return None
        try:
            value = json.loads(path.read_text())
        except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, an integer over 4300 digits, deep nesting
            problems[name] = f"not valid JSON ({type(e).__name__}: {str(e)[:120]}); not read"
            return None
        if not isinstance(value, dict):
            problems[name] = f"a JSON {type(value).__name__}, not an object; not read"
            return None
        return value

    def _metrics(self, problems: dict[str, str]) -> list[dict]:
        if self.run_file(METRICS_FILE) is None:
            if os.path.lexists(self.run_dir / METRICS_FILE):
                problems[METRICS_FILE] = "not a regular file inside the run directory; not read"
            return []
        try:
            rows = read_metrics(self.run_dir)
        except (ValueError, RecursionError) as e:
            problems[METRICS_FILE] = f"not valid JSON lines ({type(e).__name__}: {str(e)[:120]}); not read"
            return []
        return [row for row in rows if isinstance(row, dict)]

    def run(self) -> dict:
        """The run's SAE config, training config and curves, evaluation and feature-store summary, and
        `problems`: the files among these that were there but could not be read, and why."""
        problems: dict[str, str] = {}
        with self.db_lock:
            summary = {
                "features": self.store.count(),
                "labelled_090": self.store.count(min_precision=0.9),
                "tokens": self.store.tokens,
                "settings": self.store.settings,
            }
        return {
            "name": self.run_dir.name,
            "sae": self._read_json("cfg.json", problems),
            "train": self._read_json(TRAIN_CONFIG_FILE, problems),
            "eval": self._read_json(EVAL_FILE, problems),
            "metrics": self._metrics(problems),
            "store": summary,
            "max_tokens": self.max_tokens,
            "limits": asdict(self.limits),
            "problems": problems,
        }
