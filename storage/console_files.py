"""The console's own copies in its output folder: which files it wrote for which generation, export and user, and
where a job asked its pictures to go (`imagine ... --out DIR`).

A copy is recorded when it is written and forgotten when the console has removed it. A copy whose generation,
subject or user is gone (deleted, forgotten) is *orphaned*: `delete` and `forget` remove those files, and so does the
next console start after a forget that finished elsewhere.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from storage.db import now as _now

_ORPHANED = """
SELECT f.* FROM console_files f WHERE
    NOT EXISTS (SELECT 1 FROM users u WHERE u.id = f.user_id AND u.forgotten_at IS NULL)
    OR (f.generation_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = f.generation_id))
    OR (f.subject_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM subjects s WHERE s.id = f.subject_id AND s.deleted_at IS NULL))
ORDER BY f.id
"""


@dataclass(frozen=True)
class ConsoleFile:
    id: int
    user_id: int
    generation_id: int | None
    subject_id: int | None
    path: str  # absolute
    sha256: str  # of what the console wrote; a file changed since is left alone
    created_at: float


def record_file(conn: sqlite3.Connection, *, user_id: int, path: str, sha256: str, generation_id: int | None = None,
                subject_id: int | None = None) -> None:
    conn.execute(
        "INSERT INTO console_files (user_id, generation_id, subject_id, path, sha256, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (user_id, generation_id, subject_id, path, sha256, _now()),
    )


def orphaned_files(conn: sqlite3.Connection) -> list[ConsoleFile]:
    """Copies whose generation, subject or user no longer exists (or is being forgotten)."""
    return [ConsoleFile(**dict(row)) for row in conn.execute(_ORPHANED).fetchall()]


def files_of_generation(conn: sqlite3.Connection, generation_id: int) -> list[ConsoleFile]:
    rows = conn.execute("SELECT * FROM console_files WHERE generation_id = ? ORDER BY id", (generation_id,))
    return [ConsoleFile(**dict(row)) for row in rows.fetchall()]


def files_of_user(conn: sqlite3.Connection, user_id: int) -> list[ConsoleFile]:
    rows = conn.execute("SELECT * FROM console_files WHERE user_id = ? ORDER BY id", (user_id,))
    return [ConsoleFile(**dict(row)) for row in rows.fetchall()]


def drop_records(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    conn.executemany("DELETE FROM console_files WHERE id = ?", [(file_id,) for file_id in ids])


def set_destination(conn: sqlite3.Connection, job_id: int, folder: str) -> None:
    conn.execute("INSERT OR REPLACE INTO console_destinations (job_id, folder) VALUES (?, ?)", (job_id, folder))


def destination(conn: sqlite3.Connection, job_id: int) -> str | None:
    row = conn.execute("SELECT folder FROM console_destinations WHERE job_id = ?", (job_id,)).fetchone()
    return row[0] if row else None
