import sqlite3

from storage.db import BUSY_TIMEOUT_MS, transaction
from storage.migrations import applied_versions
from storage.schema import MIGRATIONS


def _pragmas(conn: sqlite3.Connection) -> tuple:
    return (
        conn.execute("PRAGMA journal_mode").fetchone()[0],
        conn.execute("PRAGMA foreign_keys").fetchone()[0],
        conn.execute("PRAGMA busy_timeout").fetchone()[0],
    )


async def test_every_connection_has_wal_foreign_keys_and_busy_timeout(call):
    assert await call(_pragmas) == ("wal", 1, BUSY_TIMEOUT_MS)


async def test_opening_applies_all_migrations(call):
    assert await call(applied_versions) == {m.version for m in MIGRATIONS}


def test_transaction_rolls_back_on_error(conn):
    conn.execute("INSERT INTO users (id, created_at) VALUES (1, 0)")
    try:
        with transaction(conn):
            conn.execute("INSERT INTO users (id, created_at) VALUES (2, 0)")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert [r[0] for r in conn.execute("SELECT id FROM users")] == [1]
    assert not conn.in_transaction
