"""Erasing forgotten users from the copies of the database: backups and the `damaged-*` folders restores leave.

Each copy is opened on its own, the users' rows are deleted as the live sweep deletes them (their users row, whose
cascades take subjects, photos, adapters, grants, jobs, generations and exports, plus other people's pictures that
show them), with `secure_delete` on, then the file is rewritten by VACUUM and any WAL is emptied, so no freed page
keeps a copy. A copy that cannot be opened (it was set aside because it is damaged) cannot be searched, so it is
deleted: keeping it would break the forget promise.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from storage.disk import is_disk_full

log = logging.getLogger(__name__)

DAMAGED_PREFIX = "damaged-"
DB_NAME = "likeness.sqlite3"
OPEN_TIMEOUT_S = 15.0


def database_copies(data_dir: Path) -> list[Path]:
    """Every copy of the database beside the live one: backups, then the `damaged-*` folders' databases."""
    data_dir = Path(data_dir)
    found = sorted((data_dir / "backups").glob("likeness-*.sqlite3")) if (data_dir / "backups").exists() else []
    for folder in sorted(data_dir.glob(f"{DAMAGED_PREFIX}*")):
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.name == DB_NAME or p.name.endswith(".sqlite3"))
    return found


def _holds_any(conn: sqlite3.Connection, user_ids: Sequence[int]) -> bool:
    marks = ",".join("?" * len(user_ids))
    return conn.execute(f"SELECT 1 FROM users WHERE id IN ({marks}) UNION ALL SELECT 1 FROM subjects WHERE "
                        f"owner_id IN ({marks}) LIMIT 1", (*user_ids, *user_ids)).fetchone() is not None


def _delete_rows(conn: sqlite3.Connection, user_ids: Sequence[int]) -> None:
    marks = ",".join("?" * len(user_ids))
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"DELETE FROM generations WHERE id IN (SELECT gs.generation_id FROM generation_subjects gs"
                     f" JOIN subjects s ON s.id = gs.subject_id WHERE s.owner_id IN ({marks}))", tuple(user_ids))
        conn.execute(f"DELETE FROM subjects WHERE owner_id IN ({marks})", tuple(user_ids))
        conn.execute(f"DELETE FROM users WHERE id IN ({marks})", tuple(user_ids))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def erase_from_copy(path: Path, user_ids: Sequence[int]) -> str:
    """'clean' (nothing of them there), 'erased', or 'removed' (unreadable, so deleted). A full disk or a lock
    raises, leaving the copy for the next try."""
    try:
        conn = sqlite3.connect(path, timeout=OPEN_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")
            check = [tuple(row) for row in conn.execute("PRAGMA quick_check(1)").fetchall()]
            if check != [("ok",)]:  # damaged pages cannot be searched, nor cleaned by deleting rows
                raise sqlite3.DatabaseError(f"quick_check: {check[0][0] if check else 'no answer'}")
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"users", "subjects", "generations", "generation_subjects"} <= tables:
                return "clean"  # an empty database (a 0-byte file set aside): nothing of anyone in it
            if not _holds_any(conn, user_ids):
                return "clean"
            _delete_rows(conn, user_ids)
            conn.execute("PRAGMA journal_mode = DELETE")  # folds any WAL in and removes it
            conn.execute("VACUUM")
        finally:
            conn.close()
        return "erased"
    except sqlite3.DatabaseError as exc:
        if is_disk_full(exc, path.parent) or "locked" in str(exc) or "busy" in str(exc):
            raise
        _remove_copy(path, exc)
        return "removed"


def _remove_copy(path: Path, exc: Exception) -> None:
    folder = path.parent
    if folder.name.startswith(DAMAGED_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        for suffix in ("", "-wal", "-shm", "-journal"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    log.warning("%s could not be opened to erase a forgotten user (%s), so it was deleted", folder if
                folder.name.startswith(DAMAGED_PREFIX) else path, exc)


def erase_from_copies(data_dir: Path, user_ids: Sequence[int]) -> dict[str, int]:
    """Erase the users from every copy; counts of each outcome. OSError (a full disk) is left to the caller."""
    counts = {"clean": 0, "erased": 0, "removed": 0}
    if not user_ids:
        return counts
    for path in database_copies(data_dir):
        if path.exists():
            counts[erase_from_copy(path, user_ids)] += 1
    if counts["erased"] or counts["removed"]:
        log.info("forgotten users erased from %d database copies (%d unreadable ones deleted)",
                 counts["erased"], counts["removed"])
    return counts
