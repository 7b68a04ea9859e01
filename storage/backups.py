"""Online backups of the database with SQLite's backup API, and the restore and verify commands.

A backup is copied page by page while the bot and the worker keep working, written to a temp file, checked with
`quick_check`, switched to a rollback journal (one self-contained file) and renamed into place; the newest
`keep` are kept. A restore never deletes anything: the current files are moved into `damaged-<time>/` first.
Backups hold only the database; photos and adapters stay in the store, which a restore leaves as it is. After a
forget, every older backup is replaced by a fresh one, so a restore can never bring a forgotten user back.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from storage.disk import human_bytes, is_disk_full, log_disk_full
from storage.files import fsync_dir
from storage.integrity import find_problem, newest_backup
from storage.locks import WORKER_LOCK, is_held

log = logging.getLogger(__name__)

BACKUPS_DIRNAME = "backups"
PAGES_PER_STEP = 256  # copy in slices so writers wait at most a slice


class BackupError(Exception):
    """A backup or restore could not be made; the message is one line for the host."""


@dataclass(frozen=True)
class RestoreReport:
    backup: Path
    moved_aside: Path | None
    users: int
    jobs: int


def backups_dir_for(db_path: Path) -> Path:
    return Path(db_path).parent / BACKUPS_DIRNAME


def list_backups(backups_dir: Path) -> list[Path]:
    return sorted(backups_dir.glob("likeness-*.sqlite3")) if backups_dir.exists() else []


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.3f}"[1:]


def backup_database(source: sqlite3.Connection, backups_dir: Path, keep: int) -> Path:
    """Copy the open database into backups_dir/likeness-<UTC time>.sqlite3; keep the newest `keep`."""
    backups_dir.mkdir(parents=True, exist_ok=True)
    target = backups_dir / f"likeness-{_stamp()}.sqlite3"
    temp = backups_dir / f".{target.name}.tmp-{os.getpid()}"
    try:
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
            raise BackupError("the disk is full, so no backup was written") from None
        raise
    finally:
        temp.unlink(missing_ok=True)
    for old in list_backups(backups_dir)[:-keep]:
        old.unlink(missing_ok=True)
    log.info("database backed up to %s (%s)", target, human_bytes(target.stat().st_size))
    return target


def backup_due(backups_dir: Path, interval_h: float, now: float | None = None) -> bool:
    if interval_h <= 0:
        return False
    newest = newest_backup(backups_dir)
    if newest is None:
        return True
    return (now or time.time()) - newest.stat().st_mtime >= interval_h * 3600


def replace_after_forget(conn: sqlite3.Connection) -> Path | None:
    """Forgotten users must not come back with a restore: write a fresh backup and drop all older ones."""
    db_file = conn.execute("PRAGMA database_list").fetchone()[2]
    if not db_file:
        return None
    backups_dir = backups_dir_for(Path(db_file))
    if not list_backups(backups_dir):
        return None
    try:
        return backup_database(conn, backups_dir, keep=1)
    except BackupError:
        for old in list_backups(backups_dir):  # without room for a new one, the old ones still have to go
            old.unlink(missing_ok=True)
        log.warning("backups removed after a forget; none could be written in their place")
        return None


def _counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        return (conn.execute("SELECT count(*) FROM users").fetchone()[0],
                conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
    finally:
        conn.close()


def _move_aside(db_path: Path) -> Path | None:
    present = [p for p in (db_path, db_path.with_name(db_path.name + "-wal"),
                           db_path.with_name(db_path.name + "-shm")) if p.exists()]
    if not present:
        return None
    aside = db_path.parent / f"damaged-{_stamp()}"
    aside.mkdir()
    for path in present:
        os.replace(path, aside / path.name)
    return aside


def restore_database(db_path: Path, backup: Path | None = None) -> RestoreReport:
    """Put a backup (default: the newest) in place of the database. Likeness must be stopped."""
    db_path = Path(db_path)
    if is_held(db_path.parent / WORKER_LOCK):
        raise BackupError("Likeness is running on this data directory; stop it (and its worker) first")
    backup = backup or newest_backup(backups_dir_for(db_path))
    if backup is None or not backup.exists():
        raise BackupError(f"no backup found in {backups_dir_for(db_path)}")
    problem = find_problem(backup)
    if problem is not None:
        raise BackupError(f"the backup cannot be used: {problem}")
    temp = db_path.with_name(f".{db_path.name}.restore-{os.getpid()}")
    shutil.copyfile(backup, temp)
    with open(temp, "rb+") as fh:
        os.fsync(fh.fileno())
    aside = _move_aside(db_path)
    os.replace(temp, db_path)
    fsync_dir(db_path.parent)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    users, job_count = _counts(db_path)
    return RestoreReport(backup, aside, users, job_count)


def verify(db_path: Path, store_dir: Path | None = None) -> list[tuple[Path, str | None]]:
    """Each file (the database, then every backup) with its problem, or None when it is sound."""
    db_path = Path(db_path)
    results = [(db_path, find_problem(db_path, store_dir))]
    results += [(backup, find_problem(backup)) for backup in list_backups(backups_dir_for(db_path))]
    return results


def run_command(mode: str, db_path: Path, store_dir: Path, keep: int, file: Path | None = None) -> tuple[int, str]:
    """`backup`, `restore [FILE]` or `verify` from the command line: (exit code, what to print)."""
    db_path = Path(db_path)
    try:
        if mode == "backup":
            problem = find_problem(db_path, store_dir)
            if problem is not None or not db_path.exists():
                return 1, f"not backed up: {problem or f'{db_path} does not exist'}"
            conn = sqlite3.connect(db_path, timeout=15, isolation_level=None)
            try:
                target = backup_database(conn, backups_dir_for(db_path), keep)
            finally:
                conn.close()
            return 0, f"backed up to {target} ({human_bytes(target.stat().st_size)})"
        if mode == "restore":
            report = restore_database(db_path, file)
            aside = f"; the previous files were moved to {report.moved_aside}" if report.moved_aside else ""
            return 0, (f"restored {db_path} from {report.backup.name} ({report.users} user(s), {report.jobs} "
                       f"job(s)){aside}")
        lines = [f"{'ok' if problem is None else 'DAMAGED'}: {problem or path}" for path, problem in
                 verify(db_path, store_dir)]
        return (0 if all(line.startswith("ok") for line in lines) else 1), "\n".join(lines)
    except BackupError as exc:
        return 1, f"{mode} failed: {exc}"
