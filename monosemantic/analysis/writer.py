"""Writing the feature store (see store.py for its layout): shard files, SQLite rows, the manifest.

A shard counts once the manifest lists it; the manifest is written after the shard file and its
SQLite rows, so a killed analysis leaves at worst a shard that is redone (its rows replaced).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import safetensors.torch
from torch import Tensor

from monosemantic.analysis.store import (
    DB_FILE,
    FEATURE_COLUMNS,
    FORMAT,
    LABELS_VERSION,
    MANIFEST,
    SCHEMA,
    StoreError,
    connect,
    read_manifest,
    shard_file,
)
from monosemantic.atomic import atomic_write_bytes, atomic_write_json, remove_stale_temporaries


class StoreWriter:
    """Creates the store, or continues one made with the same settings."""

    def __init__(self, directory: str | Path, settings: dict, n_latents: int, shard_latents: int, vocab: list[str]):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.directory)
        if (self.directory / MANIFEST).exists():
            self.manifest = read_manifest(self.directory)
            if self.manifest["settings"] != settings:
                raise StoreError(
                    f"{self.directory} holds an analysis with other settings "
                    f"({_difference(self.manifest['settings'], settings)}); "
                    "repeat it with the same settings to continue, or delete the directory"
                )
        else:
            self.manifest = {
                "format": FORMAT,
                "labels": LABELS_VERSION,
                "settings": settings,
                "n_latents": n_latents,
                "shard_latents": shard_latents,
                "shards": {},
                "complete": False,
            }
        self.db = connect(self.directory / DB_FILE)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.executescript(SCHEMA)
        if not (self.directory / MANIFEST).exists():
            with self.db:
                self.db.execute("BEGIN")
                self.db.execute("DELETE FROM vocab")
                self.db.executemany("INSERT INTO vocab VALUES (?, ?)", enumerate(vocab))
            atomic_write_json(self.directory / MANIFEST, self.manifest)

    def pending_shards(self) -> list[tuple[int, int]]:
        n, step = self.manifest["n_latents"], self.manifest["shard_latents"]
        return [
            (lo, min(n, lo + step))
            for lo in range(0, n, step)
            if shard_file(lo, min(n, lo + step)) not in self.manifest["shards"]
        ]

    def write_shard(
        self,
        lo: int,
        hi: int,
        tokens: int,
        tensors: dict[str, Tensor],
        rows: list[dict],
        labels: list[tuple],
        roles: list[tuple[int, int, str]] = (),
    ) -> None:
        """`roles`: (document, position, role) of the shard's examples (math corpus only)."""
        name = shard_file(lo, hi)
        data = safetensors.torch.save({k: v.contiguous() for k, v in tensors.items()})
        atomic_write_bytes(self.directory / name, data)
        with self.db:  # a shard half-written by a killed run is replaced as a whole
            self.db.execute("BEGIN")
            for table in ("features", "labels"):
                self.db.execute(f"DELETE FROM {table} WHERE latent >= ? AND latent < ?", (lo, hi))
            self.db.execute("DELETE FROM search WHERE rowid >= ? AND rowid < ?", (lo, hi))
            self.db.executemany(
                f"INSERT INTO features VALUES ({', '.join('?' * len(FEATURE_COLUMNS))})",
                [tuple(r.get(c) for c in FEATURE_COLUMNS) for r in rows],
            )
            self.db.executemany("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", labels)
            self.db.executemany("INSERT OR REPLACE INTO roles VALUES (?, ?, ?)", roles)  # shared by shards
            rules: dict[int, list[str]] = {}
            for latent, _, text, *_ in labels:
                rules.setdefault(latent, []).append(text)
            self.db.executemany(
                "INSERT INTO search (rowid, label, rules, tokens, contexts) VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        r["latent"],
                        _plain(r["label"]),
                        _plain(" ".join(rules.get(r["latent"], []))),
                        r["top_tokens"],
                        r.get("contexts", ""),
                    )
                    for r in rows
                ],
            )
        self.manifest["shards"][name] = {
            "lo": lo,
            "hi": hi,
            "tokens": tokens,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        atomic_write_json(self.directory / MANIFEST, self.manifest)

    def finish(self, summary: dict | None = None) -> None:
        self.manifest["complete"] = not self.pending_shards()
        self.manifest["summary"] = summary or {}
        atomic_write_json(self.directory / MANIFEST, self.manifest)
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()


def _plain(text: str | None) -> str:
    """A label as words for search: quotes dropped, visible spaces back to spaces, parentheses apart
    (so that "relation, exact (=)" is found by "=")."""
    text = (text or "").replace('"', " ").replace("␣", " ").replace("⏎", " ")
    return text.replace("(", " ( ").replace(")", " ) ")


def _difference(old: dict, new: dict) -> str:
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = sorted(k for k in flat_old.keys() | flat_new.keys() if flat_old.get(k) != flat_new.get(k))
    return ", ".join(f"{k}: {flat_old.get(k)!r} then, {flat_new.get(k)!r} now" for k in keys[:4])


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
