"""Forgetting a user: tombstone first, sweep after.

`tombstone_user` runs in one transaction: it marks the user, makes their subjects unusable at once, drops every
grant, cancels their queued jobs and asks running ones to stop. `sweep_forgotten` then deletes files and rows. It
is idempotent and runs at start-up and periodically, so a crash half-way never leaves orphans for good. The user
row goes last, in the same transaction as the other rows, so the tombstone survives until everything is gone.
Deleted rows are zeroed (`secure_delete`), the WAL is truncated and older backups are replaced, so nothing of the
user stays readable on disk.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from storage import backups, jobs
from storage.db import checkpoint_truncate, transaction
from storage.db import now as _now
from storage.files import FileStore, generation_root, user_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForgetReport:
    subjects: int
    photos: int
    adapters: int
    generations: int
    grants: int
    jobs_stopped: int


def _count(conn: sqlite3.Connection, sql: str, user_id: int) -> int:
    return conn.execute(sql, (user_id,)).fetchone()[0]


def _report(conn: sqlite3.Connection, user_id: int) -> ForgetReport:
    subjects = "SELECT id FROM subjects WHERE owner_id = ?"
    return ForgetReport(
        subjects=_count(conn, "SELECT count(*) FROM subjects WHERE owner_id = ? AND deleted_at IS NULL", user_id),
        photos=_count(conn, f"SELECT count(*) FROM photos WHERE status = 'accepted' AND subject_id IN ({subjects})",
                      user_id),
        adapters=_count(conn, "SELECT count(*) FROM adapters WHERE owner_id = ?", user_id),
        generations=_count(conn, "SELECT count(*) FROM generations WHERE user_id = ?1 OR id IN"  # and others' of them
                           " (SELECT gs.generation_id FROM generation_subjects gs JOIN subjects s"
                           "  ON s.id = gs.subject_id WHERE s.owner_id = ?1)", user_id),
        grants=_count(conn, f"SELECT count(*) FROM grants WHERE subject_id IN ({subjects})", user_id),
        jobs_stopped=_count(conn, "SELECT count(*) FROM jobs WHERE user_id = ? AND " + jobs.ACTIVE_SQL, user_id),
    )


def tombstone_user(conn: sqlite3.Connection, user_id: int) -> ForgetReport | None:
    """Mark the user forgotten and cut off every use of their likeness. None if there is nothing to forget."""
    stamp = _now()
    with transaction(conn):
        if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
            return None
        report = _report(conn, user_id)
        conn.execute("UPDATE users SET forgotten_at = coalesce(forgotten_at, ?) WHERE id = ?", (stamp, user_id))
        conn.execute(
            "UPDATE subjects SET deleted_at = coalesce(deleted_at, ?) WHERE owner_id = ?", (stamp, user_id)
        )
        conn.execute(
            "DELETE FROM grants WHERE user_id = ? OR subject_id IN (SELECT id FROM subjects WHERE owner_id = ?)",
            (user_id, user_id),
        )
        jobs.stop_jobs(conn, jobs.JobsOfUser(user_id), message="deleted on request", stamp=stamp)
    return report


def _others_generations(conn: sqlite3.Connection, user_id: int) -> list[tuple[int, int]]:
    """Other people's generations that show one of this user's subjects: (generation id, its user id)."""
    return conn.execute(
        "SELECT DISTINCT g.id, g.user_id FROM generations g JOIN generation_subjects gs ON gs.generation_id = g.id"
        " JOIN subjects s ON s.id = gs.subject_id WHERE s.owner_id = ? AND g.user_id != ?",
        (user_id, user_id),
    ).fetchall()


def _sweep_user(conn: sqlite3.Connection, store: FileStore, user_id: int) -> None:
    others = _others_generations(conn, user_id)
    for generation_id, owner_id in others:
        store.delete(generation_root(owner_id, generation_id))
    store.delete(user_root(user_id))
    with transaction(conn):
        conn.executemany("DELETE FROM generations WHERE id = ?", [(gid,) for gid, _ in others])
        # Cascades remove subjects, photos, adapters, grants, jobs, generations, groups and exports.
        conn.execute("DELETE FROM users WHERE id = ? AND forgotten_at IS NOT NULL", (user_id,))
    # A writer that raced the first delete cannot add rows any more; remove any file it left.
    store.delete(user_root(user_id))


def sweep_forgotten(conn: sqlite3.Connection, store: FileStore) -> list[int]:
    """Finish every pending forget whose jobs have stopped. Returns the users fully removed."""
    pending = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM users WHERE forgotten_at IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM jobs WHERE jobs.user_id = users.id AND jobs.state = 'running')"
        ).fetchall()
    ]
    for user_id in pending:
        _sweep_user(conn, store, user_id)
        log.info("forgot user %d", user_id)
    if pending:
        _erase_old_copies(conn)
    return pending


def _erase_old_copies(conn: sqlite3.Connection) -> None:
    """secure_delete zeroed the rows in the database; old copies of their pages remain in the WAL until a
    truncating checkpoint, and in backups until they are replaced."""
    if not checkpoint_truncate(conn):
        log.warning("the WAL could not be truncated after a forget (a reader stayed busy)")
    backups.replace_after_forget(conn)

