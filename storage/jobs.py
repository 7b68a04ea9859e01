"""The durable job queue.

A job is claimed with BEGIN IMMEDIATE plus one UPDATE ... RETURNING that sets its owner and lease. Only the lease
owner may heartbeat, release or finish it (`WHERE id=? AND owner=?`). A job whose lease runs out goes back to the
queue until it has used its attempts; then it fails with a reason. Rows are never deleted when claimed, so a
crashed worker loses nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from storage.db import now as _now
from storage.db import transaction

KINDS = ("train", "generate", "class_images")
# Interactive generation runs before training.
PRIORITY = {"generate": 0, "class_images": 5, "train": 10}
ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE_SQL = "state IN (" + ", ".join(f"'{s}'" for s in ACTIVE) + ")"
REQUEUED_MESSAGE = "waiting to resume"
# A job whose worker stopped renewing its lease (hung): shown instead of an ETA until a new worker resumes it.
STALLED_MESSAGE = "stalled, restarting"
TERMINAL_SQL = "state IN (" + ", ".join(f"'{s}'" for s in TERMINAL) + ")"


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    user_id: int | None
    priority: int
    payload: dict[str, Any]
    state: str
    owner: str | None
    lease_until: float | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    step: int
    total: int
    message: str
    eta_at: float | None
    preview_path: str | None
    result: dict[str, Any] | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    channel_id: int | None
    message_id: int | None
    reported_at: float | None
    notified: bool
    node: str | None = None  # the cluster node running it (cluster mode only)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        data["payload"] = json.loads(data["payload"] or "{}")
        data["result"] = json.loads(data["result"]) if data["result"] else None
        data["cancel_requested"] = bool(data["cancel_requested"])
        data["notified"] = bool(data["notified"])
        return cls(**data)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class Heartbeat:
    alive: bool  # False: the lease is lost (expired and taken, or the job was finished elsewhere)
    cancel_requested: bool


def enqueue_job(
    conn: sqlite3.Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    user_id: int | None = None,
    priority: int | None = None,
    max_attempts: int = 3,
    channel_id: int | None = None,
) -> int:
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    stamp = _now()
    cursor = conn.execute(
        "INSERT INTO jobs (kind, user_id, priority, payload, max_attempts, channel_id, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (kind, user_id, PRIORITY[kind] if priority is None else priority,
         json.dumps(payload, sort_keys=True), max_attempts, channel_id, stamp, stamp),
    )
    return int(cursor.lastrowid)


def claim_next_job(
    conn: sqlite3.Connection, owner: str, lease_s: float, kinds: Sequence[str] = KINDS
) -> Job | None:
    """Take the most urgent queued job: highest priority first, then oldest."""
    stamp = _now()
    marks = ",".join("?" * len(kinds))
    with transaction(conn):
        row = conn.execute(
            "UPDATE jobs SET state = 'running', owner = ?, lease_until = ?, attempts = attempts + 1,"
            " started_at = coalesce(started_at, ?), updated_at = ?"
            " WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND kind IN (" + marks + ")"
            "             ORDER BY priority, id LIMIT 1)"
            " RETURNING *",
            (owner, stamp + lease_s, stamp, stamp, *kinds),
        ).fetchone()
    return Job.from_row(row) if row else None


def heartbeat(
    conn: sqlite3.Connection,
    job_id: int,
    owner: str,
    lease_s: float,
    *,
    step: int | None = None,
    total: int | None = None,
    message: str | None = None,
    eta_at: float | None = None,
    preview_path: str | None = None,
) -> Heartbeat:
    """Extend the lease and record progress; tells the worker whether it still owns the job."""
    stamp = _now()
    row = conn.execute(
        "UPDATE jobs SET lease_until = ?, updated_at = ?, step = coalesce(?, step), total = coalesce(?, total),"
        " message = coalesce(?, message), eta_at = coalesce(?, eta_at), preview_path = coalesce(?, preview_path)"
        " WHERE id = ? AND owner = ? AND state = 'running' RETURNING cancel_requested",
        (stamp + lease_s, stamp, step, total, message, eta_at, preview_path, job_id, owner),
    ).fetchone()
    return Heartbeat(alive=row is not None, cancel_requested=bool(row and row[0]))


def finish_job(
    conn: sqlite3.Connection,
    job_id: int,
    owner: str,
    state: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome; False when this worker no longer owns the job."""
    if state not in TERMINAL:
        raise ValueError(f"not a final state: {state!r}")
    stamp = _now()
    cursor = conn.execute(
        "UPDATE jobs SET state = ?, result = ?, error = ?, finished_at = ?, updated_at = ?, lease_until = NULL"
        " WHERE id = ? AND owner = ? AND state = 'running'",
        (state, json.dumps(result, sort_keys=True) if result is not None else None, error, stamp, stamp,
         job_id, owner),
    )
    return cursor.rowcount == 1


def set_node(conn: sqlite3.Connection, job_id: int, owner: str, node: str | None) -> bool:
    """Record which cluster node runs the job (None while it waits for one); only the lease owner may."""
    cursor = conn.execute(
        "UPDATE jobs SET node = ?, updated_at = ? WHERE id = ? AND owner = ? AND state = 'running'",
        (node, _now(), job_id, owner),
    )
    return cursor.rowcount == 1


def release_job(conn: sqlite3.Connection, job_id: int, owner: str, message: str = "") -> bool:
    """Give a job back to the queue on a clean shutdown; the attempt does not count."""
    cursor = conn.execute(
        "UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL, attempts = max(attempts - 1, 0),"
        " message = ?, updated_at = ? WHERE id = ? AND owner = ? AND state = 'running'",
        (message, _now(), job_id, owner),
    )
    return cursor.rowcount == 1


def _requeue_where(conn: sqlite3.Connection, where: str, params: tuple,
                   message: str = REQUEUED_MESSAGE) -> tuple[list[int], list[int]]:
    stamp = _now()
    with transaction(conn):
        failed = conn.execute(
            "UPDATE jobs SET state = 'failed', owner = NULL, lease_until = NULL, finished_at = ?, updated_at = ?,"
            " error = 'The worker stopped ' || attempts || ' times while running this job, so it was given up.'"
            " WHERE state = 'running' AND attempts >= max_attempts AND " + where + " RETURNING id",
            (stamp, stamp, *params),
        ).fetchall()
        requeued = conn.execute(
            "UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL, updated_at = ?, eta_at = NULL,"
            " message = ? WHERE state = 'running' AND " + where + " RETURNING id",
            (stamp, message, *params),
        ).fetchall()
    return sorted(row[0] for row in requeued), sorted(row[0] for row in failed)


def requeue_expired(conn: sqlite3.Connection) -> tuple[list[int], list[int]]:
    """Jobs whose lease ran out go back to the queue; those out of attempts fail. Returns (requeued, failed)."""
    return _requeue_where(conn, "lease_until < ?", (_now(),))


def requeue_owner(conn: sqlite3.Connection, owner: str,
                  message: str = REQUEUED_MESSAGE) -> tuple[list[int], list[int]]:
    """A worker known to be dead: its jobs go back now instead of waiting for the lease."""
    return _requeue_where(conn, "owner = ?", (owner,), message)


def stalled_jobs(conn: sqlite3.Connection, owner: str | None, now: float | None = None) -> list[int]:
    """The owner's running jobs whose lease has run out: its worker stopped renewing them."""
    rows = conn.execute(
        "SELECT id FROM jobs WHERE owner = ? AND state = 'running' AND lease_until < ? ORDER BY id",
        (owner, _now() if now is None else now),
    ).fetchall()
    return [row[0] for row in rows]


def is_stalled(job: Job, now: float | None = None) -> bool:
    """Running, but its lease ran out (nobody has put it back yet): its ETA means nothing now."""
    return job.state == "running" and job.lease_until is not None and job.lease_until < (now or _now())


def last_succeeded_at(conn: sqlite3.Connection, kind: str) -> float | None:
    """When the latest job of this kind succeeded (a finished training is worth a backup at once)."""
    return conn.execute("SELECT max(finished_at) FROM jobs WHERE kind = ? AND state = 'succeeded'",
                        (kind,)).fetchone()[0]


def as_shown(job: Job, now: float | None = None) -> Job:
    """The job as users should see it: a stalled one says so and carries no ETA."""
    if not is_stalled(job, now):
        return job
    return replace(job, message=STALLED_MESSAGE, eta_at=None, started_at=None)


def request_cancel(conn: sqlite3.Connection, job_id: int) -> str:
    """'cancelled' for a queued job, 'requested' for a running one, else 'finished' or 'not_found'."""
    stamp = _now()
    with transaction(conn):
        row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return "not_found"
        if row[0] not in ACTIVE:
            return "finished"
        stop_jobs(conn, OneJob(job_id), message="cancelled", stamp=stamp)
        return "cancelled" if row[0] == "queued" else "requested"


@dataclass(frozen=True)
class OneJob:
    job_id: int


@dataclass(frozen=True)
class JobsOfUser:
    user_id: int


JobSelector = OneJob | JobsOfUser


def _selector_sql(selector: JobSelector) -> tuple[str, tuple]:
    """The WHERE condition for a selector: only these fixed fragments ever reach the SQL text."""
    if isinstance(selector, OneJob):
        return "id = ?", (selector.job_id,)
    if isinstance(selector, JobsOfUser):
        return "user_id = ?", (selector.user_id,)
    raise TypeError(f"not a job selector: {selector!r}")


def stop_jobs(conn: sqlite3.Connection, selector: JobSelector, *, message: str, stamp: float) -> None:
    """Cancel the selected queued jobs now, and ask running ones to stop (the worker honours the flag).
    Call inside a transaction."""
    where, params = _selector_sql(selector)
    conn.execute(
        "UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?, message = ?"
        " WHERE state = 'queued' AND " + where,
        (stamp, stamp, message, *params),
    )
    conn.execute(
        "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE state = 'running' AND " + where,
        (stamp, *params),
    )


def get_job(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return Job.from_row(row) if row else None


def queue_position(conn: sqlite3.Connection, job_id: int) -> int | None:
    """1 means next to run; 0 means running now; None means finished or unknown."""
    row = conn.execute("SELECT state, priority FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or row["state"] in TERMINAL:
        return None
    if row["state"] == "running":
        return 0
    ahead = conn.execute(
        "SELECT count(*) FROM jobs WHERE state = 'queued' AND (priority < ? OR (priority = ? AND id < ?))",
        (row["priority"], row["priority"], job_id),
    ).fetchone()[0]
    return ahead + 1


def active_jobs(conn: sqlite3.Connection, user_id: int | None = None) -> list[Job]:
    query = "SELECT * FROM jobs WHERE " + ACTIVE_SQL
    params: tuple = ()
    if user_id is not None:
        query += " AND user_id = ?"
        params = (user_id,)
    rows = conn.execute(query + " ORDER BY state = 'queued', priority, id", params).fetchall()
    return [Job.from_row(row) for row in rows]


def count_active(conn: sqlite3.Connection, user_id: int, kind: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM jobs WHERE user_id = ? AND kind = ? AND " + ACTIVE_SQL,
        (user_id, kind),
    ).fetchone()[0]


def count_waiting(conn: sqlite3.Connection, kinds: Sequence[str]) -> int:
    marks = ",".join("?" * len(kinds))
    return conn.execute(
        "SELECT count(*) FROM jobs WHERE state = 'queued' AND kind IN (" + marks + ")", tuple(kinds)
    ).fetchone()[0]


def set_job_message(conn: sqlite3.Connection, job_id: int, channel_id: int | None, message_id: int | None) -> None:
    conn.execute("UPDATE jobs SET channel_id = ?, message_id = ? WHERE id = ?", (channel_id, message_id, job_id))


def jobs_to_report(conn: sqlite3.Connection) -> list[Job]:
    """Jobs with news for their message: changed since last rendered, or finished and not yet announced."""
    rows = conn.execute(
        "SELECT * FROM jobs WHERE channel_id IS NOT NULL AND notified = 0"
        " AND (reported_at IS NULL OR updated_at > reported_at OR " + TERMINAL_SQL + ")"
        " ORDER BY id"
    ).fetchall()
    return [Job.from_row(row) for row in rows]


def mark_reported(conn: sqlite3.Connection, job_id: int, *, notified: bool, message_id: int | None = None) -> None:
    conn.execute(
        "UPDATE jobs SET reported_at = ?, notified = ?, message_id = coalesce(?, message_id) WHERE id = ?",
        (_now(), int(notified), message_id, job_id),
    )


def unannounced_local_jobs(conn: sqlite3.Connection) -> list[Job]:
    """Jobs of local front ends (the console: no channel) that are active, or finished without their notice."""
    rows = conn.execute(
        "SELECT * FROM jobs WHERE channel_id IS NULL AND user_id IS NOT NULL"
        " AND (" + ACTIVE_SQL + " OR notified = 0) ORDER BY id"
    ).fetchall()
    return [Job.from_row(row) for row in rows]


def claim_notice(conn: sqlite3.Connection, job_id: int) -> bool:
    """Mark a finished job's notice as delivered; False when someone delivered it already."""
    cursor = conn.execute(
        "UPDATE jobs SET notified = 1, reported_at = ? WHERE id = ? AND notified = 0 AND " + TERMINAL_SQL,
        (_now(), job_id),
    )
    return cursor.rowcount == 1
