"""Writing the feature store (see store.py for its layout): shard files, SQLite rows, the manifest.

A shard counts once the manifest lists it; the manifest is written after the shard file and its
SQLite rows, so a killed analysis leaves at worst a shard that is redone (its rows replaced). A store
found damaged when the analysis starts again is repaired: a shard whose file or rows are missing or
do not match their sha256 is analysed again, a database SQLite cannot read is made anew (and every
shard analysed again), a manifest that is not JSON starts the store over (integrity.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from pathlib import Path

import safetensors.torch
from torch import Tensor

from monosemantic.analysis.integrity import rows_present, rows_sha256, table_sha256, write_failed
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
from monosemantic.sae.config import file_sha256

log = logging.getLogger(__name__)


class StoreWriter:
    """Creates the store, or continues one made with the same settings after repairing it."""

    def __init__(self, directory: str | Path, settings: dict, n_latents: int, shard_latents: int, vocab: list[str]):
        self.directory = Path(directory)
        self.db_file = self.directory / DB_FILE
        self.vocab = vocab
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.directory)
        previous = self._previous_manifest()
        if previous is not None and previous["settings"] != settings:
            raise StoreError(
                f"{self.directory} holds an analysis with other settings "
                f"({_difference(previous['settings'], settings)}); "
                "repeat it with the same settings to continue, or delete the directory"
            )
        if previous is None:
            _remove_database(self.db_file)  # rows of an analysis no manifest describes
        self.manifest = previous or {
            "format": FORMAT,
            "labels": LABELS_VERSION,
            "settings": settings,
            "n_latents": n_latents,
            "shard_latents": shard_latents,
            "shards": {},
            "complete": False,
        }
        try:
            self.db = self._open()
        except sqlite3.OperationalError as e:
            raise write_failed(self.db_file, e) from e
        atomic_write_json(self.directory / MANIFEST, self.manifest)

    def _previous_manifest(self) -> dict | None:
        """The manifest of the store being continued; None for a new store, or one whose manifest is
        not readable JSON (damage: the store is made anew). A store of another format is refused."""
        file = self.directory / MANIFEST
        if not file.exists():
            return None
        try:
            return read_manifest(self.directory)
        except StoreError:
            if _format_of(file) not in (FORMAT, None):
                raise
            log.warning("%s is damaged: the feature store is made anew", file)
            return None

    def _open(self) -> sqlite3.Connection:
        """The database, checked against the manifest (`_repair`); one SQLite cannot read is made anew,
        and every shard analysed again."""
        if not self.db_file.exists():
            _remove_database(self.db_file)  # a -wal file without its database must not be replayed into a new one
            if self.manifest["shards"]:
                log.warning("%s is missing: every shard is analysed again", self.db_file)
            self.manifest["shards"], self.manifest["tables_sha256"] = {}, {}
        try:
            return self._connect_and_repair()
        except sqlite3.OperationalError:
            raise  # cannot write (full, read-only, locked): the caller says so
        except sqlite3.DatabaseError as e:
            log.warning("%s is damaged (%s): it is made anew and every shard analysed again", self.db_file, e)
            _remove_database(self.db_file)
            self.manifest["shards"], self.manifest["tables_sha256"] = {}, {}
            return self._connect_and_repair()

    def _connect_and_repair(self) -> sqlite3.Connection:
        db = connect(self.db_file)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(SCHEMA)
            self._repair(db)
        except BaseException:
            db.close()
            raise
        return db

    def _repair(self, db: sqlite3.Connection) -> None:
        """Write the vocab table unless it holds `vocab`; drop from the manifest every shard whose file
        or rows are missing or damaged (all of them if the shared roles table was changed), so that
        they are analysed again."""
        hashes = self.manifest.setdefault("tables_sha256", {})
        if [r[0] for r in db.execute("SELECT text FROM vocab ORDER BY id")] != self.vocab:
            with db:
                db.execute("BEGIN")
                db.execute("DELETE FROM vocab")
                db.executemany("INSERT INTO vocab VALUES (?, ?)", enumerate(self.vocab))
        hashes["vocab"] = table_sha256(db, "vocab")
        if "roles" in hashes and table_sha256(db, "roles") != hashes["roles"]:
            log.warning("%s: the roles table was changed; every shard is analysed again", self.db_file)
            db.execute("DELETE FROM roles")
            self.manifest["shards"] = {}
        for name, entry in list(self.manifest["shards"].items()):
            problem = self._shard_problem(db, name, entry)
            if problem is not None:
                log.warning(
                    "%s: %s; latents %d-%d are analysed again", self.directory, problem, entry["lo"], entry["hi"] - 1
                )
                del self.manifest["shards"][name]
        if self.pending_shards():
            self.manifest["complete"] = False
            hashes.pop("roles", None)  # the shards to come add roles; finish() records the table's hash

    def _shard_problem(self, db: sqlite3.Connection, name: str, entry: dict) -> str | None:
        path, lo, hi = self.directory / name, entry["lo"], entry["hi"]
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != entry["sha256"]:
            return f"{name} does not match its sha256"
        if "rows_sha256" in entry:
            if rows_sha256(db, lo, hi) != entry["rows_sha256"]:
                return f"the rows of latents {lo}-{hi - 1} in {DB_FILE} are missing or do not match their sha256"
        elif not rows_present(db, lo, hi):
            return f"the rows of latents {lo}-{hi - 1} are missing from {DB_FILE}"
        return None

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
        try:
            digest = self._write_rows(lo, hi, rows, labels, roles)
        except sqlite3.OperationalError as e:
            raise write_failed(self.db_file, e) from e
        self.manifest["shards"][name] = {
            "lo": lo,
            "hi": hi,
            "tokens": tokens,
            "sha256": hashlib.sha256(data).hexdigest(),
            "rows_sha256": digest,
        }
        atomic_write_json(self.directory / MANIFEST, self.manifest)

    def _write_rows(self, lo: int, hi: int, rows: list[dict], labels: list[tuple], roles) -> str:
        """Replace the rows of latents [lo, hi) in one transaction; returns their content hash."""
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
            return rows_sha256(self.db, lo, hi)  # as the transaction leaves them

    def finish(self, summary: dict | None = None) -> None:
        """Record the store as complete (with the roles table's hash) and fold the write-ahead log into
        the database, so that a copy of features/ without -wal and -shm files holds everything."""
        self.manifest["complete"] = not self.pending_shards()
        self.manifest["summary"] = summary or {}
        try:
            if self.manifest["complete"]:
                self.manifest["tables_sha256"]["roles"] = table_sha256(self.db, "roles")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as e:
            raise write_failed(self.db_file, e) from e
        atomic_write_json(self.directory / MANIFEST, self.manifest)
        self.db.close()


def _remove_database(db_file: Path) -> None:
    for path in (db_file, db_file.with_name(db_file.name + "-wal"), db_file.with_name(db_file.name + "-shm")):
        path.unlink(missing_ok=True)


def _format_of(file: Path) -> object:
    """The "format" a JSON manifest names (None if it is not a JSON object)."""
    try:
        manifest = json.loads(file.read_bytes())
    except (OSError, ValueError):
        return None
    return manifest.get("format") if isinstance(manifest, dict) else None


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
