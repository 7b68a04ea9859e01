"""Photo rows. Accepted photos point at an EXIF-free original and a prepared crop in the file store; rejected
photos keep only their name and the reason, never their bytes."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from storage.db import now as _now


@dataclass(frozen=True)
class Photo:
    id: int
    subject_id: int
    status: str
    reason: str
    original_name: str
    sha256: str | None
    phash: str | None
    original_path: str | None
    crop_path: str | None
    size_bytes: int
    width: int | None
    height: int | None
    face_box: tuple[int, int, int, int] | None
    caption: str
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Photo:
        data = dict(row)
        data["face_box"] = tuple(json.loads(data["face_box"])) if data["face_box"] else None
        return cls(**data)


def add_accepted_photo(
    conn: sqlite3.Connection,
    subject_id: int,
    *,
    original_name: str,
    sha256: str,
    phash: str,
    original_path: str,
    crop_path: str,
    size_bytes: int,
    width: int,
    height: int,
    face_box: tuple[int, int, int, int],
    caption: str,
) -> Photo:
    row = conn.execute(
        "INSERT INTO photos (subject_id, status, original_name, sha256, phash, original_path, crop_path,"
        " size_bytes, width, height, face_box, caption, created_at)"
        " VALUES (?, 'accepted', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        (subject_id, original_name, sha256, phash, original_path, crop_path, size_bytes, width, height,
         json.dumps(list(face_box)), caption, _now()),
    ).fetchone()
    return Photo.from_row(row)


def add_rejected_photo(conn: sqlite3.Connection, subject_id: int, original_name: str, reason: str) -> Photo:
    row = conn.execute(
        "INSERT INTO photos (subject_id, status, reason, original_name, created_at)"
        " VALUES (?, 'rejected', ?, ?, ?) RETURNING *",
        (subject_id, reason, original_name, _now()),
    ).fetchone()
    return Photo.from_row(row)


def accepted_photos(conn: sqlite3.Connection, subject_id: int) -> list[Photo]:
    rows = conn.execute(
        "SELECT * FROM photos WHERE subject_id = ? AND status = 'accepted' ORDER BY id", (subject_id,)
    ).fetchall()
    return [Photo.from_row(row) for row in rows]


def count_accepted(conn: sqlite3.Connection, subject_id: int) -> int:
    return conn.execute(
        "SELECT count(*) FROM photos WHERE subject_id = ? AND status = 'accepted'", (subject_id,)
    ).fetchone()[0]


def known_phashes(conn: sqlite3.Connection, subject_id: int) -> list[str]:
    rows = conn.execute(
        "SELECT phash FROM photos WHERE subject_id = ? AND status = 'accepted'", (subject_id,)
    ).fetchall()
    return [row[0] for row in rows]


def get_photo(conn: sqlite3.Connection, photo_id: int) -> Photo | None:
    row = conn.execute("SELECT * FROM photos WHERE id = ?", (photo_id,)).fetchone()
    return Photo.from_row(row) if row else None


def delete_photo(conn: sqlite3.Connection, photo_id: int) -> Photo | None:
    """Delete the row and return it, so the caller can remove its files."""
    row = conn.execute("DELETE FROM photos WHERE id = ? RETURNING *", (photo_id,)).fetchone()
    return Photo.from_row(row) if row else None


def set_caption(conn: sqlite3.Connection, photo_id: int, caption: str) -> None:
    conn.execute("UPDATE photos SET caption = ? WHERE id = ?", (caption, photo_id))


def add_embedding(conn: sqlite3.Connection, photo_id: int, model: str, vector: bytes) -> None:
    """Store a photo's face identity descriptor (computed once, at upload)."""
    conn.execute(
        "INSERT OR REPLACE INTO photo_embeddings (photo_id, model, vector) VALUES (?, ?, ?)",
        (photo_id, model, bytes(vector)),
    )


def subject_embeddings(conn: sqlite3.Connection, subject_id: int, model: str) -> list[bytes]:
    """The stored descriptors of a subject's accepted photos, in photo order (photos without one are skipped)."""
    rows = conn.execute(
        "SELECT e.vector FROM photo_embeddings e JOIN photos p ON p.id = e.photo_id"
        " WHERE p.subject_id = ? AND p.status = 'accepted' AND e.model = ? ORDER BY p.id",
        (subject_id, model),
    ).fetchall()
    return [row[0] for row in rows]


def group_embeddings(conn: sqlite3.Connection, group_id: int, model: str) -> dict[int, list[bytes]]:
    """Descriptors per subject of a family group (live subjects only), keyed by subject id."""
    rows = conn.execute(
        "SELECT p.subject_id, e.vector FROM photo_embeddings e JOIN photos p ON p.id = e.photo_id"
        " JOIN subjects s ON s.id = p.subject_id"
        " WHERE s.group_id = ? AND s.deleted_at IS NULL AND p.status = 'accepted' AND e.model = ? ORDER BY p.id",
        (group_id, model),
    ).fetchall()
    grouped: dict[int, list[bytes]] = {}
    for subject_id, vector in rows:
        grouped.setdefault(subject_id, []).append(vector)
    return grouped
