"""Users, subjects (the people and pets that adapters learn) and family groups."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from storage.db import now as _now


class TriggerTakenError(Exception):
    """The trigger, or a look-alike of it, is already in use."""


class UserBeingForgottenError(Exception):
    """The user asked to be forgotten and the deletion has not finished yet."""


@dataclass(frozen=True)
class Subject:
    id: int
    owner_id: int
    trigger: str
    trigger_key: str
    class_noun: str
    display_name: str
    family: str
    group_id: int | None
    guild_id: int | None
    created_at: float
    deleted_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Subject:
        return cls(**dict(row))

    @property
    def prompt_name(self) -> str:
        """How the subject is written in prompts: `rraj person`."""
        return f"{self.trigger} {self.class_noun}"


def ensure_user(conn: sqlite3.Connection, user_id: int, display_name: str = "") -> None:
    """Create the user row on first contact; a user whose deletion is still running must wait."""
    if is_forgotten(conn, user_id):
        raise UserBeingForgottenError(user_id)
    conn.execute(
        "INSERT INTO users (id, display_name, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT(id) DO UPDATE SET display_name = excluded.display_name WHERE excluded.display_name != ''",
        (user_id, display_name[:100], _now()),
    )


def is_forgotten(conn: sqlite3.Connection, user_id: int) -> bool:
    """True from the tombstone until the sweep removes the user (a forget may wait for a running job)."""
    row = conn.execute("SELECT forgotten_at FROM users WHERE id = ?", (user_id,)).fetchone()
    return row is not None and row[0] is not None


def create_subject(
    conn: sqlite3.Connection,
    *,
    owner_id: int,
    trigger: str,
    trigger_key: str,
    class_noun: str,
    display_name: str,
    family: str,
    guild_id: int | None = None,
    group_id: int | None = None,
) -> Subject:
    try:
        row = conn.execute(
            "INSERT INTO subjects (owner_id, trigger, trigger_key, class_noun, display_name, family, group_id,"
            " guild_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (owner_id, trigger, trigger_key, class_noun, display_name, family, group_id, guild_id, _now()),
        ).fetchone()
    except sqlite3.IntegrityError as exc:
        if "trigger_key" in str(exc):
            raise TriggerTakenError(trigger) from None
        raise
    return Subject.from_row(row)


def get_subject(conn: sqlite3.Connection, subject_id: int, *, include_deleted: bool = False) -> Subject | None:
    row = conn.execute("SELECT * FROM subjects WHERE id = ?", (subject_id,)).fetchone()
    if row is None or (row["deleted_at"] is not None and not include_deleted):
        return None
    return Subject.from_row(row)


def subject_by_trigger_key(conn: sqlite3.Connection, trigger_key: str) -> Subject | None:
    row = conn.execute(
        "SELECT * FROM subjects WHERE trigger_key = ? AND deleted_at IS NULL", (trigger_key,)
    ).fetchone()
    return Subject.from_row(row) if row else None


def subjects_owned(conn: sqlite3.Connection, owner_id: int) -> list[Subject]:
    rows = conn.execute(
        "SELECT * FROM subjects WHERE owner_id = ? AND deleted_at IS NULL ORDER BY id", (owner_id,)
    ).fetchall()
    return [Subject.from_row(row) for row in rows]


def taken_trigger_keys(conn: sqlite3.Connection) -> set[str]:
    """Every key in use, deleted-but-not-swept ones included (they are still unique in the index)."""
    return {row[0] for row in conn.execute("SELECT trigger_key FROM subjects")}


def group_id_for(conn: sqlite3.Connection, owner_id: int, name: str) -> int:
    """The owner's family group of that name, created on first use."""
    conn.execute(
        "INSERT INTO subject_groups (owner_id, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (owner_id, name, _now()),
    )
    return conn.execute(
        "SELECT id FROM subject_groups WHERE owner_id = ? AND name = ?", (owner_id, name)
    ).fetchone()[0]


def set_subject_group(conn: sqlite3.Connection, subject_id: int, group_id: int | None) -> None:
    conn.execute("UPDATE subjects SET group_id = ? WHERE id = ?", (group_id, subject_id))


def group_id_named(conn: sqlite3.Connection, owner_id: int, name: str) -> int | None:
    """The owner's family group of that name, if it exists (group_id_for creates it)."""
    row = conn.execute(
        "SELECT id FROM subject_groups WHERE owner_id = ? AND name = ?", (owner_id, name)
    ).fetchone()
    return row[0] if row else None


def subjects_in_group(conn: sqlite3.Connection, group_id: int) -> list[Subject]:
    rows = conn.execute(
        "SELECT * FROM subjects WHERE group_id = ? AND deleted_at IS NULL ORDER BY id", (group_id,)
    ).fetchall()
    return [Subject.from_row(row) for row in rows]


def group_name(conn: sqlite3.Connection, group_id: int) -> str | None:
    row = conn.execute("SELECT name FROM subject_groups WHERE id = ?", (group_id,)).fetchone()
    return row[0] if row else None
