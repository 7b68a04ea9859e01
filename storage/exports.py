"""Export rows: every zip handed to a user is recorded, so /forget finds and removes it too."""

from __future__ import annotations

import sqlite3

from storage.db import now as _now
from storage.files import export_key


def record_export(conn: sqlite3.Connection, user_id: int, keep_s: float) -> tuple[int, str, list[str]]:
    """A new export row and its store key, plus the keys of this user's exports older than `keep_s`
    (their rows are removed here; the caller deletes their files)."""
    stamp = _now()
    stale = conn.execute(
        "DELETE FROM exports WHERE user_id = ? AND created_at < ? RETURNING path", (user_id, stamp - keep_s)
    ).fetchall()
    export_id = conn.execute(
        "INSERT INTO exports (user_id, path, created_at) VALUES (?, '', ?)", (user_id, stamp)
    ).lastrowid
    key = export_key(user_id, export_id)
    conn.execute("UPDATE exports SET path = ? WHERE id = ?", (key, export_id))
    return export_id, key, [row[0] for row in stale if row[0]]


def delete_export(conn: sqlite3.Connection, export_id: int) -> None:
    conn.execute("DELETE FROM exports WHERE id = ?", (export_id,))
