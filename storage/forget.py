"""Forgetting a user: journal first, tombstone next, sweep after.

`tombstone_user` writes the user into the forget journal (storage/forget_journal.py, a file beside the database)
before anything else, then in one transaction marks the user, makes their subjects unusable at once, drops every
grant, cancels their queued jobs and asks running ones to stop. `sweep_forgotten` then deletes files and rows. The
user row goes last, in the same transaction as the other rows, so the tombstone survives until everything is gone.
Deleted rows are zeroed (`secure_delete`), the WAL is truncated, every backup and `damaged-*` copy is cleaned
(storage/erasure.py) and a fresh backup is taken; only then does the journal keep just a salted hash of the user.
`finish_at_start` runs before a bot or console serves anyone: it finishes every erasure the journal still holds
(a process killed half-way) and erases again any forgotten user that a restore from an older backup brought back.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from pathlib import Path

from storage import backups, erasure, forget_journal, jobs
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
    if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
        return None
    data_dir = _data_dir(conn)
    if data_dir is not None:  # durably, before anything is changed: a crash from here on is finished at start
        forget_journal.add_pending(data_dir, [user_id], stamp)
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
        log.info("forgot a user (rows and files)")  # never their id: the log file is not erased
    _finish_erasures(conn, pending)
    return pending


def _data_dir(conn: sqlite3.Connection) -> Path | None:
    db_file = conn.execute("PRAGMA database_list").fetchone()[2]
    return Path(db_file).parent if db_file else None


def _created_at(conn: sqlite3.Connection, user_id: int) -> float | None:
    row = conn.execute("SELECT created_at FROM users WHERE id = ?", (user_id,)).fetchone()
    return None if row is None else row[0]


def _finish_erasures(conn: sqlite3.Connection, swept: list[int]) -> None:
    """Rows and files are gone for `swept` and for any journaled user whose row is gone (a process killed after
    its sweep): clean the old copies of the database, then close their journal entries."""
    data_dir = _data_dir(conn)
    journaled = forget_journal.pending_users(data_dir) if data_dir is not None else {}
    done = set(swept)
    for user_id, stamp in journaled.items():
        created = _created_at(conn, user_id)
        if created is None or created > stamp:  # gone, or a new account made after the forget
            done.add(user_id)
    if not done:
        return
    if not checkpoint_truncate(conn):
        log.warning("the WAL could not be truncated after a forget (a reader stayed busy)")
    if data_dir is None:
        return
    try:
        erasure.erase_from_copies(data_dir, sorted(done))
    except (OSError, sqlite3.Error) as exc:  # a full disk, a busy copy: the journal keeps them for the next sweep
        log.warning("old copies of the database could not be cleaned yet after a forget (%s); trying again later",
                    exc)
        return
    backups.backup_after_forget(conn)
    forget_journal.finish(data_dir, sorted(done))


def finish_at_start(conn: sqlite3.Connection, store: FileStore, *, worker_running: bool) -> list[int]:
    """Before serving: finish the erasures the journal holds, and erase again every forgotten user a restore
    brought back. Their jobs left `running` by a dead worker are cancelled unless a worker runs. Returns the users
    erased again."""
    data_dir = _data_dir(conn)
    again: list[int] = []
    if data_dir is not None and forget_journal.journal_path(data_dir).exists():
        journal = forget_journal.load(data_dir)
        for user_id, created, forgotten in conn.execute("SELECT id, created_at, forgotten_at FROM users").fetchall():
            if user_id in journal.pending:
                if forgotten is None and created <= journal.pending[user_id]:  # killed before its tombstone
                    tombstone_user(conn, user_id)
            elif journal.forgotten and (at := journal.forgotten_at(user_id, created)) is not None:
                again.append(user_id)
                forget_journal.add_pending(data_dir, [user_id], at)  # the same forget, applied again
                tombstone_user(conn, user_id)
        if again:
            log.warning("erasing %d forgotten user(s) again: the database (a restored backup) still held them",
                        len(again))
    if not worker_running:
        _cancel_orphaned_jobs(conn)
    sweep_forgotten(conn, store)
    return again


def _cancel_orphaned_jobs(conn: sqlite3.Connection) -> None:
    """No worker runs: a forgotten user's job still marked running belongs to a dead one; it stops here."""
    stamp = _now()
    conn.execute(
        "UPDATE jobs SET state = 'cancelled', owner = NULL, lease_until = NULL, finished_at = ?, updated_at = ?,"
        " message = 'deleted on request' WHERE state = 'running' AND user_id IN"
        " (SELECT id FROM users WHERE forgotten_at IS NOT NULL)", (stamp, stamp))
