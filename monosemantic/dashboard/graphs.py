"""What the graph view can do with a transcoder set (`monosemantic train --transcoder --hookpoint
'layers.*.mlp'`): list and read its attribution graphs (RUN/graphs/NAME.json, written by `monosemantic
trace`), label their feature nodes where a layer's transcoder has been analysed, intervene on their
features in the real model, and trace new prompts. Plain Python like `service.py`: limits, locks, no HTTP.

    graphs = GraphSet("runs/tc")                   # loads the transcoders and their model once
    graphs.names(); graphs.graph("47_35_8")
    graphs.intervene("47_35_8", [{"layer": 3, "pos": 9, "latent": 40, "value": 0.0}])
    graphs.trace("12 + 7 = ", "1")                # -> {"name", "url"}; one trace at a time
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from monosemantic.analysis.store import FeatureStore, StoreError
from monosemantic.atomic import atomic_write_json
from monosemantic.circuits.graph import TraceConfig, trace_prompt
from monosemantic.circuits.intervene import intervene
from monosemantic.circuits.transcoders import check_fits, load_transcoder_set
from monosemantic.config import ConfigError
from monosemantic.dashboard.service import RequestError, shown
from monosemantic.data.corpora import prompt_ids
from monosemantic.models import context_length, load_model

GRAPHS_DIR = "graphs"  # as `monosemantic trace` writes them (cli/trace.py)
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def _within(name: str, value: float, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or not low <= value <= high:  # NaN fails every comparison
        raise RequestError(f"{name} = {shown(value)} is out of range; expected {low:g} to {high:g}")


def _valid_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(f"the prompt has a lone surrogate at character {e.start}; expected valid Unicode") from None


@dataclass(frozen=True)
class GraphLimits:
    """What one graph-view request may ask for."""

    body_bytes: int = 1 << 20
    prompt_chars: int = 1000
    edits: int = 32  # feature edits in one intervention
    strength: float = 1000.0  # |value| of an edit
    listed: int = 500  # graphs in the list


def graph_slug(prompt: str, target: str | None) -> str:
    """A graph's file name from its prompt and target: '47 + 35 = ', '8' -> 47_35_8."""
    return re.sub(r"[^0-9A-Za-z]+", "_", f"{prompt} {target or ''}").strip("_")[:60] or "graph"


class GraphSet:
    """The transcoders of one set, their model, and the graphs traced with them."""

    def __init__(self, run_dir: str | Path, *, device: str = "cpu", limits: GraphLimits = GraphLimits()):
        self.run_dir = Path(run_dir)
        self.limits = limits
        self.tset = load_transcoder_set(self.run_dir)
        self.model, self.tokenizer = load_model(self.tset.model, device=device)
        self.transcoders = [tc.to(device) for tc in self.tset.transcoders]
        check_fits(self.model, self.transcoders)
        self.model_lock, self.trace_lock = threading.Lock(), threading.Lock()
        self.max_tokens = context_length(self.model) or 256
        self._stores: dict[int, FeatureStore | None] = {}

    @property
    def n_layers(self) -> int:
        return len(self.transcoders)

    def _path(self, name: str) -> Path:
        if not NAME.fullmatch(name):
            raise RequestError(f"graph name {name[:120]!r}; expected letters, digits, '_', '.' or '-' (up to 100)")
        root = (self.run_dir / GRAPHS_DIR).resolve()
        path = (root / f"{name}.json").resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise RequestError(f"no graph {name!r} in {self.run_dir / GRAPHS_DIR}; trace one first", 404)
        return path

    def names(self) -> list[dict]:
        """The set's graphs, newest first: name, prompt, target, kept nodes and edges, scores."""
        files = sorted((self.run_dir / GRAPHS_DIR).glob("*.json"), key=lambda p: -p.stat().st_mtime)
        out = []
        for path in files[: self.limits.listed]:
            try:
                g = json.loads(path.read_text())
                out.append(
                    {
                        "name": path.stem,
                        "prompt": g["prompt"],
                        "target": g["target"]["token"],
                        "counts": g["counts"],
                        "scores": g["scores"],
                    }
                )
            except (ValueError, KeyError, TypeError, OSError, RecursionError):
                out.append({"name": path.stem, "problem": "not a graph of `monosemantic trace`; not read"})
        return out

    def graph(self, name: str) -> dict:
        """Graph `name` as `trace` wrote it, each feature node with its `label` (None where its layer
        is not analysed) and `analysed`."""
        path = self._path(name)
        try:
            g = json.loads(path.read_text())
            nodes = g["nodes"]
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise RequestError(f"graph {name!r} is not a graph of `monosemantic trace` ({type(e).__name__})") from e
        for layer in range(self.n_layers):
            latents = [n["latent"] for n in nodes if n.get("kind") == "feature" and n.get("layer") == layer]
            labels = self.labels(layer, latents)
            for n in nodes:
                if n.get("kind") == "feature" and n.get("layer") == layer:
                    n["analysed"], n["label"] = labels is not None, (labels or {}).get(n["latent"])
        g["name"] = name
        return g

    def store(self, layer: int) -> FeatureStore | None:
        """Layer `layer`'s feature store (`monosemantic analyze RUN/layers.L.mlp`), None if not analysed."""
        if layer not in self._stores:
            try:
                self._stores[layer] = FeatureStore.open(self.layer_dir(layer))
            except (StoreError, OSError):
                self._stores[layer] = None
        return self._stores[layer]

    def layer_dir(self, layer: int) -> Path:
        return self.run_dir / f"layers.{layer}.mlp"

    def labels(self, layer: int, latents: list[int]) -> dict[int, str | None] | None:
        store = self.store(layer)
        if store is None:
            return None
        with self.model_lock:  # the store's SQLite connection is not shared between threads at once
            return store.labels(sorted(set(latents)))

    def check_latent(self, layer: int, latent: int) -> None:
        _within("layer", layer, 0, self.n_layers - 1)
        _within("latent", latent, 0, self.transcoders[layer].d_sae - 1)

    def intervene(self, name: str, edits: list[dict]) -> dict:
        """The graph's logits (target and alternatives) at its last position, clean and with each edit's
        feature set to its value (0: ablated), in the real model with the transcoders' errors kept."""
        g = self.graph(name)
        _within("number of edits", len(edits), 1, self.limits.edits)
        n_pos = len(g["tokens"])
        for e in edits:
            self.check_latent(e["layer"], e["latent"])
            _within("pos", e["pos"], 0, n_pos - 1)
            _within(f"value of L{e['layer']} f{e['latent']}", e["value"], -self.limits.strength, self.limits.strength)
        logit_tokens = [n["token_id"] for n in g["nodes"] if n.get("kind") == "logit"]
        with self.model_lock, torch.no_grad():
            ids = prompt_ids(self.tokenizer, g["prompt"])
            if len(ids) != n_pos:
                raise RequestError(f"graph {name!r} has {n_pos} tokens but its prompt tokenizes to {len(ids)} here")
            out = intervene(self.model, self.transcoders, ids, edits, logit_tokens)
        return {
            "tokens": [self.tokenizer.decode([t]) for t in logit_tokens],
            "token_ids": logit_tokens,
            "clean": out["clean"],
            "edited": out["edited"],
            "diff": out["diff"],
            "edits": out["edits"],
        }

    def trace(self, prompt: str, target: str | None = None) -> dict:
        """Trace `prompt` (for `target`, or the model's top prediction) into RUN/graphs; one at a time."""
        if not prompt.strip():
            raise RequestError("the prompt is empty; give the text whose next token the graph explains")
        if len(prompt) > self.limits.prompt_chars:
            raise RequestError(
                f"prompt of {len(prompt)} characters; the graph view takes at most {self.limits.prompt_chars}"
            )
        _valid_unicode(prompt)
        if target is not None and (len(target) > 40 or not target):
            raise RequestError(
                f"target {target[:60]!r}; expected one token (e.g. a digit), or none for the top prediction"
            )
        n = len(prompt_ids(self.tokenizer, prompt))
        if n > self.max_tokens:
            raise RequestError(f"the prompt has {n} tokens; the model's context is {self.max_tokens}")
        if not self.trace_lock.acquire(blocking=False):
            raise RequestError("a trace is already running; wait for it to finish", 409)
        try:
            with self.model_lock:
                graph = trace_prompt(self.model, self.tokenizer, self.transcoders, prompt, TraceConfig(target=target))
        except ConfigError as e:
            raise RequestError(str(e)) from e
        finally:
            self.trace_lock.release()
        name = graph_slug(prompt, target)
        (self.run_dir / GRAPHS_DIR).mkdir(exist_ok=True)
        atomic_write_json(self.run_dir / GRAPHS_DIR / f"{name}.json", graph)
        return {"name": name, "url": f"/graph/{name}", "counts": graph["counts"], "seconds": graph["seconds"]}

    def feature(self, layer: int, latent: int) -> dict:
        """A transcoder latent: its layer's analysis if there is one, and its nodes in the set's graphs."""
        self.check_latent(layer, latent)
        store = self.store(layer)
        found = None
        if store is not None:
            with self.model_lock:
                f = store.feature(latent)
            found = {
                "label": f.label and f.label.text,
                "precision": f.label and f.label.precision,
                "density": f.density,
                "max_act": f.max_act,
                "top_examples": [
                    {"tokens": x.tokens, "active": x.active, "value": x.value} for x in f.top_examples[:10]
                ],
            }
        nodes = []
        for g in self.names()[:100]:
            if "problem" in g:
                continue
            for n in json.loads(self._path(g["name"]).read_text())["nodes"]:
                if n.get("kind") == "feature" and n.get("layer") == layer and n.get("latent") == latent:
                    nodes.append(
                        {"graph": g["name"], **{k: n.get(k) for k in ("pos", "token", "activation", "influence")}}
                    )
        return {
            "layer": layer,
            "latent": latent,
            "analysed": found,
            "analyse": f"monosemantic analyze {self.layer_dir(layer)}",
            "nodes": nodes,
        }
