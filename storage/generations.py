"""Generation rows (every parameter kept, so buttons can re-roll or upscale later) and the style library."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.db import now as _now


@dataclass(frozen=True)
class Generation:
    id: int
    user_id: int
    job_id: int | None
    parent_id: int | None
    kind: str
    prompt: str
    negative_prompt: str
    seed: int
    params: dict[str, Any]
    adapters: list[dict[str, Any]]
    outputs: list[str]
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    created_at: float
    subject_ids: tuple[int, ...]


def _from_row(conn: sqlite3.Connection, row: sqlite3.Row) -> Generation:
    data = dict(row)
    for key in ("params", "adapters", "outputs"):
        data[key] = json.loads(data[key])
    data["subject_ids"] = tuple(
        r[0] for r in conn.execute(
            "SELECT subject_id FROM generation_subjects WHERE generation_id = ? ORDER BY rowid", (row["id"],)
        )
    )
    return Generation(**data)


def create_generation(
    conn: sqlite3.Connection,
    *,
    user_id: int,
    kind: str,
    prompt: str,
    negative_prompt: str,
    seed: int,
    params: dict[str, Any],
    adapters: list[dict[str, Any]],
    subject_ids: Sequence[int],
    guild_id: int | None = None,
    channel_id: int | None = None,
    parent_id: int | None = None,
) -> int:
    generation_id = conn.execute(
        "INSERT INTO generations (user_id, parent_id, kind, prompt, negative_prompt, seed, params, adapters,"
        " guild_id, channel_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (user_id, parent_id, kind, prompt, negative_prompt, seed, json.dumps(params, sort_keys=True),
         json.dumps(adapters, sort_keys=True), guild_id, channel_id, _now()),
    ).lastrowid
    conn.executemany(
        "INSERT OR IGNORE INTO generation_subjects (generation_id, subject_id) VALUES (?, ?)",
        [(generation_id, subject_id) for subject_id in subject_ids],
    )
    return int(generation_id)


def get_generation(conn: sqlite3.Connection, generation_id: int) -> Generation | None:
    row = conn.execute("SELECT * FROM generations WHERE id = ?", (generation_id,)).fetchone()
    return _from_row(conn, row) if row else None


def attach_job(conn: sqlite3.Connection, generation_id: int, job_id: int) -> None:
    conn.execute("UPDATE generations SET job_id = ? WHERE id = ?", (job_id, generation_id))


def set_outputs(conn: sqlite3.Connection, generation_id: int, outputs: Sequence[str]) -> bool:
    """False when the generation was deleted meanwhile (then the caller removes the files it wrote)."""
    cursor = conn.execute(
        "UPDATE generations SET outputs = ? WHERE id = ?", (json.dumps(list(outputs)), generation_id)
    )
    return cursor.rowcount == 1


def set_generation_message(
    conn: sqlite3.Connection, generation_id: int, channel_id: int | None, message_id: int | None
) -> None:
    conn.execute(
        "UPDATE generations SET channel_id = ?, message_id = ? WHERE id = ?", (channel_id, message_id, generation_id)
    )


def delete_generation(conn: sqlite3.Connection, generation_id: int) -> Generation | None:
    generation = get_generation(conn, generation_id)
    if generation is not None:
        conn.execute("DELETE FROM generations WHERE id = ?", (generation_id,))
    return generation



# Styles.
@dataclass(frozen=True)
class Style:
    id: int
    name: str
    family: str
    path: str
    sha256: str
    weight: float
    added_by: int | None
    created_at: float


def add_style(
    conn: sqlite3.Connection, *, name: str, family: str, path: str, sha256: str, weight: float, added_by: int | None
) -> Style:
    row = conn.execute(
        "INSERT INTO styles (name, family, path, sha256, weight, added_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(name) DO UPDATE SET family = excluded.family, path = excluded.path, sha256 = excluded.sha256,"
        " weight = excluded.weight, added_by = excluded.added_by RETURNING *",
        (name, family, path, sha256, weight, added_by, _now()),
    ).fetchone()
    return Style(**dict(row))


def get_style(conn: sqlite3.Connection, name: str) -> Style | None:
    row = conn.execute("SELECT * FROM styles WHERE name = ?", (name,)).fetchone()
    return Style(**dict(row)) if row else None


def list_styles(conn: sqlite3.Connection, family: str | None = None) -> list[Style]:
    if family is None:
        rows = conn.execute("SELECT * FROM styles ORDER BY name").fetchall()
    else:
        rows = conn.execute("SELECT * FROM styles WHERE family = ? ORDER BY name", (family,)).fetchall()
    return [Style(**dict(row)) for row in rows]


def delete_style(conn: sqlite3.Connection, name: str) -> Style | None:
    row = conn.execute("DELETE FROM styles WHERE name = ? RETURNING *", (name,)).fetchone()
    return Style(**dict(row)) if row else None
