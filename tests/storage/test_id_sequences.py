"""Migration 2: ids that leave the process are AUTOINCREMENT, on new and on existing databases."""

import sqlite3

import pytest

from storage.db import connect
from storage.id_sequences import rebuild_with_autoincrement, with_autoincrement
from storage.migrations import migrate
from storage.schema import MIGRATIONS, NEVER_REUSED_IDS


def _create_sql(conn, table):
    return conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]


def _fill_version_1(conn):
    """A database as migration 1 left it, with rows in every related table."""
    conn.executescript("""
        INSERT INTO users (id, created_at) VALUES (11, 0), (12, 0);
        INSERT INTO subject_groups (id, owner_id, name, created_at) VALUES (1, 11, 'smiths', 0);
        INSERT INTO subjects (id, owner_id, trigger, trigger_key, class_noun, display_name, family, group_id,
                              created_at) VALUES (1, 11, 'rraj', 'rraj', 'person', 'Raj', 'tiny-sd15', 1, 0),
                                             (2, 11, 'ssam', 'ssam', 'person', 'Sam', 'tiny-sd15', NULL, 0);
        INSERT INTO photos (id, subject_id, status, original_name, created_at) VALUES (1, 1, 'rejected', 'a.jpg', 0);
        INSERT INTO jobs (id, kind, user_id, priority, state, created_at, updated_at)
            VALUES (1, 'train', 11, 10, 'succeeded', 0, 0), (2, 'generate', 11, 0, 'succeeded', 0, 0),
                   (3, 'generate', 11, 0, 'queued', 0, 0);
        INSERT INTO adapters (id, owner_id, job_id, family, base_model, version, path, sha256, size_bytes,
                              created_at) VALUES (1, 11, 1, 'tiny-sd15', 'tiny', 1, 'a', 'h', 1, 0);
        INSERT INTO adapter_subjects VALUES (1, 1);
        INSERT INTO grants (id, subject_id, user_id, created_at) VALUES (1, 1, 12, 0);
        INSERT INTO generations (id, user_id, job_id, parent_id, kind, prompt, seed, created_at)
            VALUES (1, 11, 2, NULL, 'imagine', 'p', 1, 0), (2, 11, 3, 1, 'reroll', 'p', 2, 0);
        INSERT INTO generation_subjects VALUES (2, 1);
        INSERT INTO exports (id, user_id, path, created_at) VALUES (1, 11, 'x.zip', 0);
    """)


def _snapshot(conn):
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " AND name != 'schema_migrations' ORDER BY name")]
    return {t: [tuple(r) for r in conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid')] for t in tables}


def _indexes(conn):
    return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql NOT NULL"))


def test_existing_rows_indexes_and_foreign_keys_survive_the_rebuild(tmp_path):
    conn = connect(tmp_path / "db.sqlite3", apply_migrations=False)
    migrate(conn, MIGRATIONS[:1])
    _fill_version_1(conn)
    before, indexes = _snapshot(conn), _indexes(conn)
    assert migrate(conn, MIGRATIONS[:2]) == [2]
    after = _snapshot(conn)
    jobs_before = before.pop("jobs")
    jobs_after = after.pop("jobs")
    assert after == before and len(jobs_after) == len(jobs_before)
    assert _indexes(conn) == indexes
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    # finished console jobs count as delivered; the queued one is still news
    notified = dict(conn.execute("SELECT id, notified FROM jobs").fetchall())
    assert notified == {1: 1, 2: 1, 3: 0}
    for table in NEVER_REUSED_IDS:
        assert "AUTOINCREMENT" in _create_sql(conn, table).upper(), table
    # cascades still point at the rebuilt tables
    conn.execute("DELETE FROM subjects WHERE id = 1")
    assert conn.execute("SELECT count(*) FROM grants").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM adapter_subjects").fetchone()[0] == 0


def test_deleted_ids_are_not_handed_out_again(tmp_path):
    conn = connect(tmp_path / "db.sqlite3")
    conn.execute("INSERT INTO users (id, created_at) VALUES (11, 0)")
    first = [conn.execute("INSERT INTO jobs (kind, user_id, priority, created_at, updated_at)"
                          " VALUES ('generate', 11, 0, 0, 0)").lastrowid for _ in range(3)]
    conn.execute("DELETE FROM jobs")
    again = conn.execute("INSERT INTO jobs (kind, user_id, priority, created_at, updated_at)"
                         " VALUES ('generate', 11, 0, 0, 0)").lastrowid
    assert again > max(first)


def test_a_failed_rebuild_rolls_back_with_everything_in_place(tmp_path):
    conn = connect(tmp_path / "db.sqlite3", apply_migrations=False)
    migrate(conn, MIGRATIONS[:1])
    _fill_version_1(conn)
    before = _snapshot(conn)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(ValueError):
        rebuild_with_autoincrement(conn, ["subjects", "adapter_subjects"])  # the second has no id column
    conn.execute("ROLLBACK")
    assert _snapshot(conn) == before


def test_with_autoincrement_changes_only_the_id_column():
    sql = "CREATE TABLE t (\n    id INTEGER PRIMARY KEY,\n    other_id INTEGER NOT NULL\n)"
    assert with_autoincrement(sql) == sql.replace("PRIMARY KEY,", "PRIMARY KEY AUTOINCREMENT,")
    assert with_autoincrement(with_autoincrement(sql)) == with_autoincrement(sql)
    with pytest.raises(ValueError):
        with_autoincrement("CREATE TABLE t (name TEXT PRIMARY KEY)")
    assert sqlite3.complete_statement(with_autoincrement(sql) + ";")
