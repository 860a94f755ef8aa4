"""monosemantic.analysis.integrity on a small synthetic store (StoreWriter, no model): a change to any row,
the vocab or the roles is refused before anything from it is served, naming the rerun of `analyze` that
repairs it; reopening the writer drops exactly what is damaged; a damaged or foreign manifest is handled."""

import json
import sqlite3

import pytest
import torch

from monosemantic.analysis.integrity import rows_sha256
from monosemantic.analysis.store import DB_FILE, FEATURE_COLUMNS, MANIFEST, FeatureStore, StoreError, features_dir
from monosemantic.analysis.writer import StoreWriter

SETTINGS = {"analysis": {"tokens": 1000, "top_k": 4}, "corpus": "mathlm"}
VOCAB = ["<pad>", "1", "+", "="]
N, SHARD = 64, 32


def write_store(run_dir, shards=((0, 32), (32, 64))):
    writer = StoreWriter(features_dir(run_dir), SETTINGS, N, SHARD, VOCAB)
    for lo, hi in shards:
        rows = [
            dict.fromkeys(FEATURE_COLUMNS, "[]") | {"latent": i, "fires": i, "label": f'"{i}"'} for i in range(lo, hi)
        ]
        labels = [
            (i, "token", f'"{i}"', 0.5, 0.25, 0.3, 10, 4, json.dumps({"kind": "token", "token": 1}))
            for i in range(lo, hi)
        ]
        writer.write_shard(lo, hi, 1000, {"hist": torch.zeros(hi - lo, 4)}, rows, labels, [(lo, 1, f"digit {lo}")])
    writer.finish()
    return features_dir(run_dir)


def change(run_dir, sql):
    with sqlite3.connect(features_dir(run_dir) / DB_FILE) as db:
        db.execute(sql)


EDITS = {
    "label": "UPDATE features SET label = '\"x\"' WHERE latent = 40",
    "rule": "UPDATE labels SET precision = 0.75 WHERE latent = 33",
    "search": "UPDATE search SET label = 'x' WHERE rowid = 40",
    "row gone": "DELETE FROM features WHERE latent = 63",
}


@pytest.mark.parametrize("edit", EDITS)
def test_a_changed_row_is_refused_on_open_and_only_its_shard_is_redone(tmp_path, edit):
    store_dir = write_store(tmp_path)
    FeatureStore.open(tmp_path).close()
    change(tmp_path, EDITS[edit])
    store = FeatureStore.open(tmp_path)
    assert store.labels([3]) == {3: '"3"'}  # the other shard still reads
    for served in (lambda: store.labels([40]), lambda: store.list(), lambda: store.search("x"), store.count):
        with pytest.raises(StoreError) as e:
            served()
    assert str(e.value) == (
        f"{store_dir / DB_FILE}: the rows of features 32-63 do not match their sha256 in the manifest (the database "
        f"was changed or damaged); run `monosemantic analyze {tmp_path} --tokens 1000 --top-k 4` to repair it"
    )
    writer = StoreWriter(store_dir, SETTINGS, N, SHARD, VOCAB)
    assert writer.pending_shards() == [(32, 64)]
    assert not json.loads((store_dir / MANIFEST).read_text())["complete"]


@pytest.mark.parametrize("table", ["vocab", "roles"])
def test_a_changed_vocab_or_roles_table_is_refused_and_repaired(tmp_path, table):
    store_dir = write_store(tmp_path)
    change(tmp_path, f"UPDATE {table} SET {'text' if table == 'vocab' else 'role'} = 'x' WHERE rowid = 2")
    with pytest.raises(StoreError, match=f"the {table} table does not match its sha256"):
        FeatureStore.open(tmp_path).roles([(32, 1)])  # the vocab is checked on opening, the roles when read
    writer = StoreWriter(store_dir, SETTINGS, N, SHARD, VOCAB)
    assert writer.pending_shards() == ([] if table == "vocab" else [(0, 32), (32, 64)])  # the vocab is rewritten
    writer.finish()
    if table == "vocab":
        assert FeatureStore.open(tmp_path).vocab == VOCAB


def test_rows_hash_is_that_of_the_rows_as_read_back(tmp_path):
    store_dir = write_store(tmp_path)
    manifest = json.loads((store_dir / MANIFEST).read_text())
    db = sqlite3.connect(store_dir / DB_FILE)
    for entry in manifest["shards"].values():
        assert rows_sha256(db, entry["lo"], entry["hi"]) == entry["rows_sha256"]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"format": "monosemantic-features/1", "shards": {}}', "no valid 'settings', 'n_latents', 'shard_latents'"),
    ],
)
def test_a_damaged_manifest_is_one_error_and_analyze_starts_over(tmp_path, text, problem):
    store_dir = write_store(tmp_path)
    (store_dir / MANIFEST).write_text(text)
    with pytest.raises(StoreError, match=problem) as e:
        FeatureStore.open(tmp_path)
    assert str(e.value).startswith(str(store_dir / MANIFEST))
    assert str(e.value).endswith(f"run `monosemantic analyze {tmp_path}` again to rebuild the store")
    writer = StoreWriter(store_dir, SETTINGS, N, SHARD, VOCAB)
    assert writer.pending_shards() == [(0, 32), (32, 64)]
    assert writer.db.execute("SELECT COUNT(*) FROM features").fetchone()[0] == 0  # rows no manifest describes: gone


def test_a_store_of_another_format_is_not_replaced(tmp_path):
    store_dir = write_store(tmp_path)
    (store_dir / MANIFEST).write_text(json.dumps({"format": "monosemantic-features/9"}))
    with pytest.raises(StoreError, match="format 'monosemantic-features/9', expected 'monosemantic-features/1'"):
        StoreWriter(store_dir, SETTINGS, N, SHARD, VOCAB)
    assert (store_dir / DB_FILE).exists()


def test_a_database_sqlite_cannot_read_is_made_anew(tmp_path):
    store_dir = write_store(tmp_path)
    (store_dir / DB_FILE).write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="not a readable SQLite database"):
        FeatureStore.open(tmp_path)
    writer = StoreWriter(store_dir, SETTINGS, N, SHARD, VOCAB)
    assert writer.pending_shards() == [(0, 32), (32, 64)]
    write_store(tmp_path)
    assert FeatureStore.open(tmp_path).count() == N
