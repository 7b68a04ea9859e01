import sqlite3
import threading

import pytest

from storage.db import connect
from storage.migrations import Migration, applied_versions, migrate

GOOD = [
    Migration(1, "create a", "CREATE TABLE a (x INTEGER);"),
    Migration(2, "create b", "CREATE TABLE b (y TEXT);\nINSERT INTO b VALUES ('hello; world');"),
]


def _tables(conn):
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_each_migration_applies_once(tmp_path):
    conn = connect(tmp_path / "db.sqlite3", apply_migrations=False)
    assert migrate(conn, GOOD) == [1, 2]
    assert migrate(conn, GOOD) == []
    assert [tuple(r) for r in conn.execute("SELECT y FROM b")] == [("hello; world",)]
    assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == 2


def test_failing_migration_rolls_back_and_leaves_database_usable(tmp_path):
    conn = connect(tmp_path / "db.sqlite3", apply_migrations=False)
    broken = GOOD + [Migration(3, "half broken", "CREATE TABLE c (z INTEGER);\nINSERT INTO missing VALUES (1);")]
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, broken)
    assert applied_versions(conn) == {1, 2}
    assert "c" not in _tables(conn)  # the first statement of the failed migration was rolled back
    conn.execute("INSERT INTO a VALUES (7)")  # still usable
    fixed = GOOD + [Migration(3, "fixed", "CREATE TABLE c (z INTEGER);")]
    assert migrate(conn, fixed) == [3]
    assert "c" in _tables(conn)


def test_python_step_failure_rolls_back_the_sql_too(tmp_path):
    conn = connect(tmp_path / "db.sqlite3", apply_migrations=False)

    def explode(_conn):
        raise ValueError("bad data")

    with pytest.raises(ValueError):
        migrate(conn, [Migration(1, "sql then python", "CREATE TABLE a (x INTEGER);", apply=explode)])
    assert "a" not in _tables(conn)
    assert applied_versions(conn) == set()


def test_versions_must_increase(tmp_path):
    conn = connect(tmp_path / "db.sqlite3", apply_migrations=False)
    with pytest.raises(ValueError):
        migrate(conn, [GOOD[1], GOOD[0]])


def test_concurrent_openers_apply_each_migration_once(tmp_path):
    path = tmp_path / "db.sqlite3"
    errors = []

    def open_and_migrate():
        try:
            connect(path).close()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    conn = connect(path)
    rows = conn.execute("SELECT version, count(*) FROM schema_migrations GROUP BY version").fetchall()
    assert all(count == 1 for _, count in rows)
