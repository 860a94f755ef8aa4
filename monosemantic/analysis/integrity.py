"""The feature store's integrity: what a damaged store looks like, how it is reported, and how the
database is opened for reading wherever it lies (a read-only copy included).

Besides each shard file's sha256, manifest.json records

    shards[name]["rows_sha256"]   the shard's rows of the features, labels and search tables
    tables_sha256["vocab"]        the vocab table (written once, when the store is made)
    tables_sha256["roles"]        the roles table (shared by all shards; recorded when the analysis completes)

A reader (`StoreChecks`) checks each once, before it serves anything that comes from it: the vocab
when the store opens, a shard's rows before its first feature (all shards before a search or a list),
a shard's file before its first example, the roles before the first role. So a changed or damaged
store is refused by name instead of served, and a command that reads one feature pays for one shard
(reading its rows once: about 0.3 s per 8192 latents, 24 MB of rows, on 2 busy cores). `analyze`
redoes whatever does not match (writer.py). Stores made before these hashes existed are read as they
are.
"""

from __future__ import annotations

import errno
import hashlib
import io
import pickle
import shlex
import sqlite3
from collections.abc import Callable
from pathlib import Path

from monosemantic.analysis.settings import AnalyzeConfig
from monosemantic.atomic import WriteError, write_error
from monosemantic.errors import MonosemanticError

ROW_QUERIES = (
    "SELECT * FROM features WHERE latent >= ? AND latent < ? ORDER BY latent",
    "SELECT * FROM labels WHERE latent >= ? AND latent < ? ORDER BY latent, rowid",  # insertion order: no sort
    "SELECT rowid, label, rules, tokens, contexts FROM search WHERE rowid >= ? AND rowid < ? ORDER BY rowid",
)
TABLE_QUERIES = {
    "vocab": "SELECT id, text FROM vocab ORDER BY id",
    "roles": "SELECT doc, position, role FROM roles ORDER BY doc, position",
}


class StoreError(MonosemanticError, ValueError):
    """A feature store that is missing, damaged, or made with other settings."""


# manifest.json's fields, and those of each shard entry, with their types
MANIFEST_FIELDS = {"settings": dict, "n_latents": int, "shard_latents": int, "shards": dict}
SHARD_FIELDS = {"lo": int, "hi": int, "tokens": int, "sha256": str}


def manifest_problem(manifest: dict) -> str | None:
    """What a store's manifest lacks of the fields a reader needs, None if nothing."""
    problem = _lacks(manifest, MANIFEST_FIELDS)
    for name, entry in manifest["shards"].items() if problem is None else ():
        if (problem := _lacks(entry, SHARD_FIELDS)) is not None:
            return f"shard {name!r}: {problem}"
    return problem


def _lacks(entry: object, fields: dict[str, type]) -> str | None:
    """What `entry` lacks of a JSON object with `fields` (name: type), None if nothing."""
    if not isinstance(entry, dict):
        return f"expected a JSON object, got {type(entry).__name__}"
    wrong = [name for name, kind in fields.items() if not isinstance(entry.get(name), kind)]
    return f"no valid {', '.join(map(repr, wrong))}" if wrong else None


# ---- content hashes -----------------------------------------------------------------------------


def _digest(db: sqlite3.Connection, queries: list[tuple[str, tuple]]) -> str:
    """sha256 of the rows the queries return, each query's list of rows pickled (protocol 4, no memo:
    the bytes depend on the values alone, floats exact; 10-20x faster than their repr)."""
    h = hashlib.sha256()
    for sql, args in queries:
        cursor = db.cursor()
        cursor.row_factory = None  # plain tuples of int, float, str and None, whatever the connection's
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=4)
        pickler.fast = True  # no memo, so two equal strings give the same bytes whether or not they are one object
        pickler.dump(cursor.execute(sql, args).fetchall())
        h.update(buffer.getvalue())
    return h.hexdigest()


def rows_sha256(db: sqlite3.Connection, lo: int, hi: int) -> str:
    """The content hash of latents [lo, hi) in the features, labels and search tables."""
    return _digest(db, [(sql, (lo, hi)) for sql in ROW_QUERIES])


def table_sha256(db: sqlite3.Connection, table: str) -> str:
    return _digest(db, [(TABLE_QUERIES[table], ())])


def rows_present(db: sqlite3.Connection, lo: int, hi: int) -> bool:
    """Whether every latent of [lo, hi) has its row (a store made before rows_sha256 existed)."""
    n = db.execute("SELECT COUNT(*) FROM features WHERE latent >= ? AND latent < ?", (lo, hi)).fetchone()[0]
    return n == hi - lo


def check_table(db: sqlite3.Connection, manifest: dict, table: str, db_file: Path, fix: Callable[[], str]) -> None:
    """Refuse the vocab table (or the roles table of a complete store) if it does not match its hash."""
    digest = manifest.get("tables_sha256", {}).get(table)
    if digest is None or (table == "roles" and not manifest.get("complete")):
        return  # no hash (an older store), or an analysis still writing: it adds roles before it lists its shard
    if table_sha256(db, table) != digest:
        raise StoreError(
            f"{db_file}: the {table} table does not match its sha256 in the manifest (the database was "
            f"changed or damaged); {fix()}"
        )


def check_rows(db: sqlite3.Connection, shards: dict, db_file: Path, fix: Callable[[], str]) -> None:
    """Refuse the store if the rows of a finished shard do not match the hash the manifest gives them."""
    for entry in shards.values():
        if "rows_sha256" in entry and rows_sha256(db, entry["lo"], entry["hi"]) != entry["rows_sha256"]:
            raise StoreError(
                f"{db_file}: the rows of features {entry['lo']}-{entry['hi'] - 1} do not match their sha256 in "
                f"the manifest (the database was changed or damaged); {fix()}"
            )


class StoreChecks:
    """A reader's queries, and the checks it owes them, each done once; damage SQLite itself finds
    (a truncated or overwritten file) is a StoreError too."""

    def __init__(self, db: sqlite3.Connection, db_file: Path, fix: Callable[[], str]):
        self.db, self.db_file, self.fix = db, db_file, fix
        self.done: set[str] = set()  # shard names, and "table:<name>"

    def query(self, sql: str, args=()) -> list[sqlite3.Row]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise damaged_database(self.db_file, e, self.fix) from e

    def table(self, manifest: dict, table: str) -> None:
        if f"table:{table}" not in self.done:
            self._run(check_table, manifest, table)
            self.done.add(f"table:{table}")

    def rows(self, shards: dict[str, dict]) -> None:
        """Check the rows of these shards (name: manifest entry), those not checked yet."""
        todo = {name: entry for name, entry in shards.items() if name not in self.done}
        if todo:
            self._run(check_rows, todo)
            self.done.update(todo)

    def _run(self, check, *args) -> None:
        try:
            check(self.db, *args, self.db_file, self.fix)
        except sqlite3.DatabaseError as e:
            raise damaged_database(self.db_file, e, self.fix) from e


# ---- reporting ----------------------------------------------------------------------------------


def repair_advice(run_dir: Path, settings: dict | None) -> str:
    """What to do about a damaged store: rerun `analyze` with the flags it was made with."""
    command = ["monosemantic", "analyze", str(run_dir)]
    if settings is not None:
        defaults = AnalyzeConfig()
        for name, value in settings.get("analysis", {}).items():
            if hasattr(defaults, name) and value != getattr(defaults, name):
                command += [f"--{name.replace('_', '-')}", str(value)]
    return f"run `{shlex.join(command)}` to repair it"


def damaged_database(db_file: Path, e: sqlite3.DatabaseError, fix: Callable[[], str]) -> StoreError:
    return StoreError(f"{db_file}: not a readable SQLite database ({e}); {fix()}")


def write_failed(db_file: Path, e: sqlite3.Error) -> WriteError | StoreError:
    """A failed write to the database as one message, a full disk or a read-only place as for any
    other file (atomic.py)."""
    text = str(e)
    if "full" in text:
        return write_error(db_file, OSError(errno.ENOSPC, text))
    if _cannot_open(e):
        return write_error(db_file, OSError(errno.EACCES, text))
    if "locked" in text:
        return StoreError(f"{db_file}: cannot write ({text}): another process holds it; run the command again later")
    return StoreError(f"{db_file}: cannot write ({text}); check the disk, then run the command again")


# ---- opening for reading ------------------------------------------------------------------------


def open_for_reading(db_file: Path, fix: Callable[[], str]) -> sqlite3.Connection:
    """A read-only connection to the store's database. Where SQLite cannot create the files WAL mode
    reads through (a read-only directory), a database whose log is empty (checkpointed when the
    analysis finished) is opened `immutable`: nothing can change it from here."""
    if not db_file.is_file():
        raise StoreError(f"{db_file}: missing, but the manifest lists analysed features; {fix()}")
    try:
        return _probe(sqlite3.connect(db_file, timeout=30, isolation_level=None, check_same_thread=False), True)
    except sqlite3.DatabaseError as e:
        if not _cannot_open(e):
            raise damaged_database(db_file, e, fix) from e
    wal = db_file.with_name(db_file.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        mode = "mode=ro"  # the log holds pages: they must be read, through an existing -shm file
    else:
        mode = "mode=ro&immutable=1"
    uri = f"{db_file.resolve().as_uri()}?{mode}"
    try:
        return _probe(sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False))
    except sqlite3.DatabaseError as e:
        if not _cannot_open(e):
            raise damaged_database(db_file, e, fix) from e
        if "immutable" in mode:
            raise StoreError(f"{db_file}: cannot be read ({e}); check that the file is readable") from e
        raise StoreError(
            f"{db_file}: cannot be read in this read-only place ({e}): its write-ahead log {wal.name} holds "
            "changes that SQLite reads only through a -shm file it can write; copy the features directory to a "
            "writable place, or finish `monosemantic analyze` where it was made (which folds the log in)"
        ) from e


def _cannot_open(e: sqlite3.Error) -> bool:
    """Whether SQLite failed for want of write access (to the database or the files beside it)."""
    return any(s in str(e) for s in ("readonly", "read-only", "unable to open"))


def _probe(db: sqlite3.Connection, query_only: bool = False) -> sqlite3.Connection:
    """`db`, with rows as sqlite3.Row, once a first read has shown that it can be read."""
    try:
        db.row_factory = sqlite3.Row
        if query_only:
            db.execute("PRAGMA query_only = 1")
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        db.close()
        raise
    return db
