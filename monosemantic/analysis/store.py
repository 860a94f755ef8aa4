"""The feature store of a run: RUN_DIR/features/.

    features.sqlite      per-feature statistics, labels and full-text search (SQLite, WAL mode:
                         readers query while the analysis writes)
    latents_<lo>_<hi>.safetensors
                         fixed-shape arrays per shard of latents: histograms, top and quantile
                         examples with their context windows, and the token roles of the
                         examples (math corpus; older stores have no roles table, examples no role)
    manifest.json        the settings, the label definitions' version ("labels"), every finished
                         shard with the sha256 of its file and of its rows (a shard counts once
                         listed); readers check them before serving a shard (integrity.py)

`writer.StoreWriter` fills it shard by shard (`analyze.py`); `FeatureStore` reads it, and only
reads files: what needs the run's model builds a `runmodel.RunModel`.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from monosemantic.analysis.integrity import StoreChecks, StoreError, manifest_problem, open_for_reading, repair_advice
from monosemantic.analysis.latent_stats import N_HIST, N_RANGES, RANGE_EDGES, range_of_bin
from monosemantic.atomic import read_manifest_json
from monosemantic.data.corpora import Document, document_meta, open_corpus

FEATURES_DIR = "features"
DB_FILE = "features.sqlite"
MANIFEST = "manifest.json"
FORMAT = "monosemantic-features/1"
# 2: precision = P(rule | fires), recall = P(fires | rule) (PRODUCT.md), concept / output-side / position
# rules, "dense", floors. Stores without it (version 1 swapped the two) are refused; `analyze` redoes them.
LABELS_VERSION = 2
# characters that are words of their own in search (the math corpus' symbols), besides letters and digits
SEARCH_CHARS = "=≈+−×÷<>≤≥≠/^²³π√%°·()"
SUMMARY_COLUMNS = ("latent", "label", "precision", "recall", "density", "max_act", "label_kind", "fires")
SEARCH_FIELDS = ("label", "rules", "tokens", "contexts")  # the full-text table's columns
FEATURE_COLUMNS = (
    "latent",
    "fires",
    "density",
    "mean_act",
    "max_act",
    "label",
    "label_kind",
    "precision",
    "recall",
    "f1",
    "support",
    "multilingual",
    "languages",
    "concept",
    "top_logits",
    "bottom_logits",
    "next_tokens",
    "neighbours",
    "top_tokens",
    "rule",
    "dense",
)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS vocab (id INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS features (
    latent INTEGER PRIMARY KEY, fires INTEGER, density REAL, mean_act REAL, max_act REAL,
    label TEXT, label_kind TEXT, precision REAL, recall REAL, f1 REAL, support INTEGER,
    multilingual INTEGER, languages TEXT, concept TEXT, top_logits TEXT, bottom_logits TEXT,
    next_tokens TEXT, neighbours TEXT, top_tokens TEXT, rule TEXT, dense INTEGER);
CREATE TABLE IF NOT EXISTS labels (
    latent INTEGER, kind TEXT, text TEXT, precision REAL, recall REAL, f1 REAL, support INTEGER, hits INTEGER,
    rule TEXT);
CREATE INDEX IF NOT EXISTS labels_by_latent ON labels (latent);
CREATE TABLE IF NOT EXISTS roles (doc INTEGER, position INTEGER, role TEXT NOT NULL, PRIMARY KEY (doc, position));
CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5 (
    label, rules, tokens, contexts, tokenize = "unicode61 remove_diacritics 0 tokenchars '{SEARCH_CHARS}'");
"""


def features_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / FEATURES_DIR


def shard_file(lo: int, hi: int) -> str:
    return f"latents_{lo:08d}_{hi:08d}.safetensors"


def connect(path: Path) -> sqlite3.Connection:
    """A connection that writes (the analysis); readers use `integrity.open_for_reading`."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    return db


def read_manifest(directory: Path) -> dict:
    file = directory / MANIFEST
    rebuild = f"run `monosemantic analyze {directory.parent}` again to rebuild the store"
    missing = f"{directory.parent}: no feature store yet; run `monosemantic analyze {directory.parent}`"
    manifest = read_manifest_json(file, FORMAT, StoreError, missing, rebuild)
    if (problem := manifest_problem(manifest)) is not None:
        raise StoreError(f"{file}: {problem}; {rebuild}")
    return manifest


def outdated_labels(directory: Path) -> bool:
    """Whether `directory` holds a store whose labels follow an older definition (a manifest that
    cannot be read is not one: the writer repairs or refuses it)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("labels") != LABELS_VERSION


def check_labels(directory: Path, manifest: dict) -> None:
    if manifest.get("labels") != LABELS_VERSION:
        raise StoreError(
            f"{directory} was written by an older monosemantic whose label precision and recall were swapped "
            f"(labels version {manifest.get('labels', 1)}, this one reads {LABELS_VERSION}); rerun "
            f"`monosemantic analyze {directory.parent}` to label it anew"
        )


# ---- reading ------------------------------------------------------------------------------------


@dataclass
class Example:
    """A context in which a feature fires: `tokens[active]` is the token, `acts` the feature's
    activation on every token of the window, `role` the token's role in its sample (math corpus:
    'answer_digit operation=add operand=0 place=tens value=936 exact=True'), else None."""

    doc: int
    position: int
    value: float
    tokens: list[str]
    acts: list[float]
    active: int
    role: str | None = None


@dataclass
class RangeSamples:
    """Examples drawn uniformly from the activations in [low, high), of which there were `count`."""

    low: float
    high: float
    count: int
    examples: list[Example]


@dataclass
class Rule:
    """A label rule with its held-out precision = P(rule | fires), recall = P(fires | rule) and support
    (held-out tokens it holds on); None for the "dense" label. `rule`: when it holds, as JSON
    (`label_text.py`)."""

    kind: str
    text: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int | None
    rule: dict | None = None


@dataclass
class Summary:
    index: int
    label: str | None
    precision: float | None
    recall: float | None
    density: float
    max_act: float
    kind: str | None = None  # the label's kind (concept, token, ..., dense)
    fires: int = 0  # activations on the analysed tokens: the support of everything shown about it


@dataclass
class Feature:
    index: int
    fires: int
    density: float
    mean_act: float
    max_act: float
    label: Rule | None
    rules: list[Rule]
    multilingual: bool | None
    languages: dict[str, int]
    concept: str | None
    top_logits: list[tuple[str, float]]
    bottom_logits: list[tuple[str, float]]
    next_tokens: list[tuple[str, float]]
    neighbours: list[tuple[int, float, str | None]]
    histogram: list[int]
    top_examples: list[Example]
    samples: list[RangeSamples]


@dataclass
class TracedDocument:
    doc: int
    text: str
    value: float
    position: int
    meta: dict = field(default_factory=dict)


class FeatureStore:
    """Read access to RUN_DIR/features; usable while an analysis is still writing it."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.directory = features_dir(run_dir)
        self.manifest = read_manifest(self.directory)
        check_labels(self.directory, self.manifest)
        self.db = open_for_reading(self.directory / DB_FILE, self._fix)
        self._checks = StoreChecks(self.db, self.directory / DB_FILE, self._fix)
        try:
            self.vocab = [r["text"] for r in self._checks.query("SELECT text FROM vocab ORDER BY id")]
            self._checks.table(self.manifest, "vocab")
        except StoreError:
            self.db.close()
            raise
        self._verified: set[str] = set()

    @classmethod
    def open(cls, run_dir: str | Path) -> FeatureStore:
        return cls(run_dir)

    def _fix(self) -> str:
        """What to do about damage: rerun the analysis with its settings (it repairs what it finds)."""
        return repair_advice(self.run_dir, self.manifest["settings"])

    @property
    def n_latents(self) -> int:
        return self.manifest["n_latents"]

    @property
    def tokens(self) -> int:
        """Tokens each shard was analysed on."""
        return min((s["tokens"] for s in self.manifest["shards"].values()), default=0)

    @property
    def settings(self) -> dict:
        return self.manifest["settings"]

    def _shard_of(self, i: int) -> tuple[str, dict]:
        if not 0 <= i < self.n_latents:
            raise StoreError(f"feature {i} does not exist; this SAE has features 0-{self.n_latents - 1}")
        for _ in range(2):
            for name, entry in self.manifest["shards"].items():
                if entry["lo"] <= i < entry["hi"]:
                    return name, entry
            self.manifest = read_manifest(self.directory)  # the analysis may have finished it since
        raise StoreError(
            f"feature {i} is not analysed yet (its shard is pending); run or finish "
            f"`monosemantic analyze {self.run_dir}`"
        )

    def _arrays(self, i: int) -> dict[str, Tensor]:
        """The shard arrays of feature i (the shard's sha256 checked on first use)."""
        name, entry = self._shard_of(i)
        path = self.directory / name
        if name not in self._verified:
            if not path.is_file():
                raise StoreError(f"{path}: missing, but listed in {MANIFEST}; {self._fix()}")
            if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
                raise StoreError(
                    f"{path}: contents do not match the sha256 in {MANIFEST} (the file was changed "
                    f"or damaged); {self._fix()}"
                )
            self._verified.add(name)
        row = i - entry["lo"]
        with safe_open(path, "pt") as f:
            return {k: f.get_slice(k)[row : row + 1][0] for k in f.keys()}

    def _row(self, i: int) -> sqlite3.Row:
        self._checks.rows(dict([self._shard_of(i)]))
        rows = self._checks.query("SELECT * FROM features WHERE latent = ?", (i,))
        if not rows:
            raise StoreError(f"feature {i} is listed as analysed but has no row in {DB_FILE}; {self._fix()}")
        return rows[0]

    def _check_latents(self, latents: list[int] | None) -> None:
        """Check the rows of the finished shards that hold any of `latents` (all, for None)."""
        shards = self.manifest["shards"]
        if latents is not None:
            shards = {n: e for n, e in shards.items() if any(e["lo"] <= i < e["hi"] for i in latents)}
        self._checks.rows(shards)

    def roles(self, where: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """The stored token role of each (document, position) that has one (examples, math corpus)."""
        has_table = self._checks.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'roles'")
        docs = sorted({d for d, _ in where})
        if not has_table or not docs:
            return {}
        self._checks.table(self.manifest, "roles")
        rows = self._checks.query(
            f"SELECT doc, position, role FROM roles WHERE doc IN ({', '.join('?' * len(docs))})", docs
        )
        wanted = set(where)
        return {(r[0], r[1]): r[2] for r in rows if (r[0], r[1]) in wanted}

    def _examples(self, a: dict[str, Tensor], prefix: str) -> list[Example]:
        before = self.settings["analysis"]["window"] * 3 // 4
        docs, positions = a[f"{prefix}_doc"].tolist(), a[f"{prefix}_pos"].tolist()
        roles = self.roles([(d, p) for d, p in zip(docs, positions) if d >= 0])
        out = []
        for slot in range(a[f"{prefix}_doc"].shape[0]):
            doc = int(a[f"{prefix}_doc"][slot])
            if doc < 0:
                continue
            ids = a[f"{prefix}_ctx_tokens"][slot].tolist()
            acts = a[f"{prefix}_ctx_acts"][slot].float().tolist()
            present = [j for j, t in enumerate(ids) if t >= 0]
            out.append(
                Example(
                    doc,
                    int(a[f"{prefix}_pos"][slot]),
                    float(a[f"{prefix}_value"][slot]),
                    [self.vocab[ids[j]] for j in present],
                    [acts[j] for j in present],
                    present.index(before),
                    roles.get((doc, positions[slot])),
                )
            )
        return out

    def feature(self, i: int) -> Feature:
        row, a = self._row(i), self._arrays(i)
        scores = ("precision", "recall", "f1", "support")
        rules = [
            Rule(r["kind"], r["text"], *(r[k] for k in scores), json.loads(r["rule"]))
            for r in self._checks.query("SELECT * FROM labels WHERE latent = ? ORDER BY f1 DESC", (i,))
        ]
        label = None
        if row["label"] is not None:
            label = Rule(row["label_kind"], row["label"], *(row[k] for k in scores), json.loads(row["rule"]))
        neighbours = json.loads(row["neighbours"])
        names = self.labels([j for j, _ in neighbours])
        return Feature(
            i,
            row["fires"],
            row["density"],
            row["mean_act"],
            row["max_act"],
            label,
            rules,
            None if row["multilingual"] is None else bool(row["multilingual"]),
            json.loads(row["languages"]),
            row["concept"],
            [tuple(x) for x in json.loads(row["top_logits"] or "[]")],
            [tuple(x) for x in json.loads(row["bottom_logits"] or "[]")],
            [tuple(x) for x in json.loads(row["next_tokens"])],
            [(j, s, names.get(j)) for j, s in neighbours],
            a["hist"].tolist(),
            self._examples(a, "top"),
            self._samples(a),
        )

    def _samples(self, a: dict[str, Tensor]) -> list[RangeSamples]:
        per_range = a["sample_doc"].shape[0] // N_RANGES
        counts = torch.zeros(N_RANGES, dtype=torch.long).index_add_(0, range_of_bin(torch.arange(N_HIST)), a["hist"])
        edges = [0.0, *RANGE_EDGES.tolist(), math.inf]
        out = []
        for r in reversed(range(N_RANGES)):
            part = {k: v[r * per_range : (r + 1) * per_range] for k, v in a.items() if k.startswith("sample_")}
            examples = self._examples(part, "sample")
            if examples:
                out.append(RangeSamples(edges[r], edges[r + 1], int(counts[r]), examples))
        return out

    def labels(self, latents: list[int]) -> dict[int, str | None]:
        if not latents:
            return {}
        self._check_latents(latents)
        marks = ", ".join("?" * len(latents))
        return {
            r["latent"]: r["label"]
            for r in self._checks.query(f"SELECT latent, label FROM features WHERE latent IN ({marks})", latents)
        }

    def _summaries(self, sql: str, args: tuple) -> list[Summary]:
        """Summaries of the rows of a query over all features (every shard's rows checked first)."""
        self._check_latents(None)
        return [Summary(*(r[k] for k in SUMMARY_COLUMNS)) for r in self._checks.query(sql, args)]

    def search(self, query: str, limit: int = 20) -> list[Summary]:
        """Features whose label, label rules, top tokens or contexts contain `query` (word prefixes),
        best matches first (label hits count most), dense features after all others."""
        if not query.strip():
            raise StoreError("empty search; give a word or symbol, e.g. '=' or 'Spanish'")
        phrase = '"' + query.replace('"', '""') + '"*'
        sql = (
            "SELECT f.* FROM search JOIN features f ON f.latent = search.rowid WHERE search MATCH ? ORDER BY {} LIMIT ?"
        )
        by_quality = "f.dense ASC, f.f1 DESC NULLS LAST, f.fires DESC"
        in_label = self._summaries(sql.format(by_quality), ("label : " + phrase, limit))
        seen = {s.index for s in in_label if s.kind != "dense"}
        rest = self._summaries(
            sql.format("f.dense ASC, f.fires > 0 DESC, bm25(search, 10.0, 4.0, 2.0, 0.5), f.f1 DESC"),
            (phrase, limit + len(in_label)),
        )
        found = [s for s in in_label if s.kind != "dense"] + [s for s in rest if s.index not in seen]
        return found[:limit]

    def matched(self, query: str, latents: list[int]) -> dict[int, list[str]]:
        """Which searched fields (label, rules, tokens, contexts) of each of `latents` match `query`."""
        phrase, sql = '"' + query.replace('"', '""') + '"*', "SELECT rowid FROM search WHERE search MATCH ?"
        hits = {(r[0], c) for c in SEARCH_FIELDS for r in self._checks.query(sql, (f"{c} : {phrase}",))}
        return {i: [c for c in SEARCH_FIELDS if (i, c) in hits] for i in latents}

    def list(
        self, order: str = "f1", limit: int = 20, labelled: bool = False, kinds: tuple[str, ...] = ()
    ) -> list[Summary]:
        """Features sorted by f1 / precision / density / max_act (descending), dense ones last;
        `labelled`: only features with a label (dense ones are not); `kinds`: only labels of these kinds."""
        if order not in ("f1", "precision", "density", "max_act", "latent"):
            raise StoreError(f"cannot sort by {order!r}; expected f1, precision, density, max_act or latent")
        where = "WHERE label IS NOT NULL AND dense = 0" if labelled or kinds else ""
        if kinds:
            where += f" AND label_kind IN ({', '.join('?' * len(kinds))})"
        direction = "ASC" if order == "latent" else "DESC"
        return self._summaries(
            f"SELECT * FROM features {where} ORDER BY dense ASC, {order} {direction} NULLS LAST LIMIT ?",
            (*kinds, limit),
        )

    def dense_latents(self) -> set[int]:
        """The dense features (firing on more than 10% of tokens): text views rank them last."""
        self._check_latents(None)
        return {r[0] for r in self._checks.query("SELECT latent FROM features WHERE dense = 1")}

    def column(self, name: str) -> list[float]:
        """One statistic of every feature, in latent order (0 for features not analysed yet)."""
        if name not in ("fires", "density", "mean_act", "max_act", "precision", "recall", "f1"):
            raise StoreError(f"no per-feature column {name!r}")
        values = [0.0] * self.n_latents
        self._check_latents(None)
        for r in self._checks.query(f"SELECT latent, {name} FROM features"):
            values[r[0]] = r[1] or 0.0
        return values

    def with_label(self, text: str, min_precision: float = 0.5, limit: int = 20) -> list[Summary]:
        """Features whose label mentions `text` (e.g. '=' finds "=", "␣=", "=" or "+"), by F1."""
        plain = text.replace("␣", " ")
        rows = self._summaries(
            "SELECT * FROM features WHERE label IS NOT NULL AND label_kind != 'meta' AND "
            "precision >= ? ORDER BY f1 DESC",
            (min_precision,),
        )
        return [r for r in rows if plain in r.label.replace("␣", " ")][:limit]

    def count(self, min_precision: float | None = None) -> int:
        self._check_latents(None)
        if min_precision is None:
            return self._checks.query("SELECT COUNT(*) FROM features")[0][0]
        return self._checks.query("SELECT COUNT(*) FROM features WHERE precision >= ?", (min_precision,))[0][0]

    def mean_activation(self, latents: list[int]) -> list[float]:
        """Each latent's mean activation over all analysed tokens (density x mean when firing): the
        value mean ablation sets it to."""
        for i in latents:
            self._shard_of(i)
        self._check_latents(latents)
        rows = {
            r["latent"]: r["density"] * r["mean_act"]
            for r in self._checks.query(
                f"SELECT latent, density, mean_act FROM features WHERE latent IN ({', '.join('?' * len(latents))})",
                latents,
            )
        }
        return [rows[i] for i in latents]

    def document(self, doc: int) -> Document:
        """Document `doc` of the analysed corpus, in full."""
        docs = open_corpus(self.settings["corpus"]).documents(start=doc, limit=1) if doc >= 0 else iter(())
        found = next(iter(docs), None)
        if found is None or found.id != doc:
            raise StoreError(f"document {doc} is not in the corpus {self.settings['corpus']!r}")
        return found

    def trace(self, i: int, n: int | None = None) -> list[TracedDocument]:
        """The documents of feature i's top examples, in full, with their metadata."""
        out = []
        for ex in self.feature(i).top_examples[:n]:
            doc = self.document(ex.doc)
            out.append(TracedDocument(ex.doc, doc.text, ex.value, ex.position, document_meta(doc)))
        return out

    def close(self) -> None:
        self.db.close()
