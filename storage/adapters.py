"""Adapter rows: one LoRA file, the subjects it learned, its training parameters and its metrics."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.db import now as _now


@dataclass(frozen=True)
class Adapter:
    id: int
    owner_id: int
    job_id: int | None
    family: str
    base_model: str
    version: int
    path: str
    sha256: str
    size_bytes: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    created_at: float
    subject_ids: tuple[int, ...]

    @property
    def name(self) -> str:
        """A stable adapter name for diffusers' `adapter_name`."""
        return f"adapter{self.id}"


def _from_row(conn: sqlite3.Connection, row: sqlite3.Row) -> Adapter:
    data = dict(row)
    data["params"] = json.loads(data["params"])
    data["metrics"] = json.loads(data["metrics"])
    data["subject_ids"] = tuple(
        r[0] for r in conn.execute(
            "SELECT subject_id FROM adapter_subjects WHERE adapter_id = ? ORDER BY subject_id", (row["id"],)
        )
    )
    return Adapter(**data)


def record_adapter(
    conn: sqlite3.Connection,
    *,
    owner_id: int,
    job_id: int | None,
    family: str,
    base_model: str,
    path: str,
    sha256: str,
    size_bytes: int,
    params: dict[str, Any],
    subject_ids: Sequence[int],
) -> Adapter:
    """Insert an adapter whose version is one more than any earlier adapter of the same subjects."""
    marks = ",".join("?" * len(subject_ids))
    previous = conn.execute(
        "SELECT coalesce(max(a.version), 0) FROM adapters a JOIN adapter_subjects s ON s.adapter_id = a.id"
        " WHERE s.subject_id IN (" + marks + ")",
        tuple(subject_ids),
    ).fetchone()[0]
    row = conn.execute(
        "INSERT INTO adapters (owner_id, job_id, family, base_model, version, path, sha256, size_bytes, params,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        (owner_id, job_id, family, base_model, previous + 1, path, sha256, size_bytes,
         json.dumps(params, sort_keys=True), _now()),
    ).fetchone()
    conn.executemany(
        "INSERT INTO adapter_subjects (adapter_id, subject_id) VALUES (?, ?)",
        [(row["id"], subject_id) for subject_id in subject_ids],
    )
    return _from_row(conn, row)


def get_adapter(conn: sqlite3.Connection, adapter_id: int) -> Adapter | None:
    row = conn.execute("SELECT * FROM adapters WHERE id = ?", (adapter_id,)).fetchone()
    return _from_row(conn, row) if row else None


def newest_adapter_for_subject(
    conn: sqlite3.Connection, subject_id: int, family: str | None = None
) -> Adapter | None:
    query = (
        "SELECT a.* FROM adapters a JOIN adapter_subjects s ON s.adapter_id = a.id WHERE s.subject_id = ?"
    )
    params: tuple = (subject_id,)
    if family is not None:
        query += " AND a.family = ?"
        params += (family,)
    row = conn.execute(query + " ORDER BY a.created_at DESC, a.id DESC LIMIT 1", params).fetchone()
    return _from_row(conn, row) if row else None


def existing_adapter_ids(conn: sqlite3.Connection, adapter_ids: Sequence[int]) -> set[int]:
    """Which of these adapters still exist (the worker evicts the rest from its cache)."""
    if not adapter_ids:
        return set()
    marks = ",".join("?" * len(adapter_ids))
    return {row[0] for row in conn.execute("SELECT id FROM adapters WHERE id IN (" + marks + ")", tuple(adapter_ids))}


def set_adapter_metrics(conn: sqlite3.Connection, adapter_id: int, metrics: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE adapters SET metrics = ? WHERE id = ?", (json.dumps(metrics, sort_keys=True), adapter_id)
    )
