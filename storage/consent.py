"""Who may use whose likeness: the owner, and users or whole guilds the owner granted.

The bot checks before queueing and the worker checks again before generating, so a revoked grant or a forgotten
subject also stops jobs already in the queue.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from storage.db import now as _now
from storage.subjects import Subject

_USABLE = (
    "SELECT s.* FROM subjects s WHERE s.deleted_at IS NULL AND ("
    " s.owner_id = :user"
    " OR EXISTS (SELECT 1 FROM grants g WHERE g.subject_id = s.id AND g.user_id = :user)"
    " OR (:guild IS NOT NULL AND EXISTS (SELECT 1 FROM grants g WHERE g.subject_id = s.id AND g.guild_id = :guild)))"
)


@dataclass(frozen=True)
class Grant:
    id: int
    subject_id: int
    user_id: int | None
    guild_id: int | None
    created_at: float


def grant_access(
    conn: sqlite3.Connection, subject_id: int, *, user_id: int | None = None, guild_id: int | None = None
) -> bool:
    """True when a new grant was made, False when it already existed."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO grants (subject_id, user_id, guild_id, created_at) VALUES (?, ?, ?, ?)",
        (subject_id, user_id, guild_id, _now()),
    )
    return cursor.rowcount == 1


def revoke_access(
    conn: sqlite3.Connection, subject_id: int, *, user_id: int | None = None, guild_id: int | None = None
) -> int:
    cursor = conn.execute(
        "DELETE FROM grants WHERE subject_id = ? AND coalesce(user_id, 0) = ? AND coalesce(guild_id, 0) = ?",
        (subject_id, user_id or 0, guild_id or 0),
    )
    return cursor.rowcount


def grants_for(conn: sqlite3.Connection, subject_id: int) -> list[Grant]:
    rows = conn.execute("SELECT * FROM grants WHERE subject_id = ? ORDER BY id", (subject_id,)).fetchall()
    return [Grant(**dict(row)) for row in rows]


def usable_subjects(conn: sqlite3.Connection, user_id: int, guild_id: int | None) -> list[Subject]:
    rows = conn.execute(_USABLE + " ORDER BY s.owner_id != :user, s.trigger", {"user": user_id, "guild": guild_id})
    return [Subject.from_row(row) for row in rows.fetchall()]


def may_use(conn: sqlite3.Connection, user_id: int, guild_id: int | None, subject_id: int) -> bool:
    row = conn.execute(
        _USABLE + " AND s.id = :subject", {"user": user_id, "guild": guild_id, "subject": subject_id}
    ).fetchone()
    return row is not None


def may_use_all(conn: sqlite3.Connection, user_id: int, guild_id: int | None, subject_ids: Sequence[int]) -> bool:
    return all(may_use(conn, user_id, guild_id, subject_id) for subject_id in subject_ids)


def resolve_trigger_key(
    conn: sqlite3.Connection, user_id: int, guild_id: int | None, trigger_key: str
) -> Subject | None:
    """The subject this requester may use under that trigger. Unknown and forbidden look the same: None."""
    row = conn.execute(
        _USABLE + " AND s.trigger_key = :key", {"user": user_id, "guild": guild_id, "key": trigger_key}
    ).fetchone()
    return Subject.from_row(row) if row else None
