"""Online backups of the database with SQLite's backup API, and verify (restores: storage/restore.py).

A backup is copied page by page while the bot and the worker keep working, written to a temp file, checked with
`quick_check`, switched to a rollback journal (one self-contained file) and renamed into place; the newest
`keep` are kept. A full disk stops it with the free space and leaves no partial file. Backups hold only the
database; photos and adapters stay in the store. After a forget, older backups are cleaned of the forgotten user
(storage/erasure.py) and a fresh one is taken (`backup_after_forget`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from storage.disk import describe_free, human_bytes, is_disk_full, log_disk_full
from storage.files import fsync_dir
from storage.integrity import find_problem, newest_backup

log = logging.getLogger(__name__)

BACKUPS_DIRNAME = "backups"
PAGES_PER_STEP = 256  # copy in slices so writers wait at most a slice
AFTER_FORGET_KEEP = 3  # the fresh backup after a forget never pushes out one of the newest three


class BackupError(Exception):
    """A backup or restore could not be made; the message is one line for the host."""


def backups_dir_for(db_path: Path) -> Path:
    return Path(db_path).parent / BACKUPS_DIRNAME


def list_backups(backups_dir: Path) -> list[Path]:
    return sorted(backups_dir.glob("likeness-*.sqlite3")) if backups_dir.exists() else []


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.3f}"[1:]


def backup_database(source: sqlite3.Connection, backups_dir: Path, keep: int) -> Path:
    """Copy the open database into backups_dir/likeness-<UTC time>.sqlite3; keep the newest `keep`."""
    target = backups_dir / f"likeness-{_stamp()}.sqlite3"
    temp = backups_dir / f".{target.name}.tmp-{os.getpid()}"
    try:
        backups_dir.mkdir(parents=True, exist_ok=True)
        copy = sqlite3.connect(temp, isolation_level=None)
        try:
            source.backup(copy, pages=PAGES_PER_STEP, sleep=0.01)
            copy.execute("PRAGMA journal_mode = DELETE")
            result = copy.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            copy.close()
        if result != "ok":
            raise BackupError(f"the backup copy failed its check ({result}); the database itself may be damaged")
        with open(temp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, target)
        fsync_dir(backups_dir)
    except (OSError, sqlite3.Error) as exc:
        if is_disk_full(exc, backups_dir):
            log_disk_full("backup", backups_dir, exc)
            raise BackupError(f"the disk is full ({describe_free(backups_dir)}), so no backup was written") from None
        raise
    finally:
        for leftover in (temp, temp.with_name(temp.name + "-journal")):
            leftover.unlink(missing_ok=True)
    for old in list_backups(backups_dir)[:-keep]:
        old.unlink(missing_ok=True)
    log.info("database backed up to %s (%s)", target, human_bytes(target.stat().st_size))
    return target


def backup_due(backups_dir: Path, interval_h: float, now: float | None = None,
               changed_at: float | None = None) -> bool:
    """Every `interval_h` hours (0: never), and as soon as something worth a backup happened after the newest
    one (`changed_at`, e.g. a training that finished)."""
    if interval_h <= 0:
        return False
    newest = newest_backup(backups_dir)
    if newest is None:
        return True
    taken = newest.stat().st_mtime
    if changed_at is not None and changed_at > taken:
        return True
    return (now or time.time()) - taken >= interval_h * 3600


def backup_after_forget(conn: sqlite3.Connection) -> Path | None:
    """A fresh backup once a forget has finished (the older ones were cleaned of the user by then)."""
    db_file = conn.execute("PRAGMA database_list").fetchone()[2]
    if not db_file:
        return None
    backups_dir = backups_dir_for(Path(db_file))
    try:
        return backup_database(conn, backups_dir, keep=max(AFTER_FORGET_KEEP, len(list_backups(backups_dir))))
    except (BackupError, OSError, sqlite3.Error) as exc:
        log.warning("no backup was taken after a forget (%s); the older ones were already cleaned", exc)
        return None


def move_aside(db_path: Path) -> Path | None:
    """Move the database files into a new `damaged-<time>/` folder (nothing is deleted); None if there are none."""
    present = [p for p in (db_path, db_path.with_name(db_path.name + "-wal"),
                           db_path.with_name(db_path.name + "-shm")) if p.exists()]
    if not present:
        return None
    aside = db_path.parent / f"damaged-{_stamp()}"
    aside.mkdir()
    for path in present:
        os.replace(path, aside / path.name)
    return aside


def verify(db_path: Path, store_dir: Path | None = None) -> list[tuple[Path, str | None]]:
    """Each file (the database, then every backup) with its problem, or None when it is sound."""
    db_path = Path(db_path)
    results = [(db_path, find_problem(db_path, store_dir))]
    results += [(backup, find_problem(backup)) for backup in list_backups(backups_dir_for(db_path))]
    return results
