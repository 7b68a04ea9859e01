"""`backup`, `restore [--force] [FILE]` and `verify` from the command line: (exit code, what to print).

All three take the data directory's instance lock (storage/locks.py). A restore needs it to itself. A backup or a
verify holds it while nothing else does, so Likeness cannot start and no restore can begin meanwhile; next to a
running bot or console they go ahead (an online backup is made for exactly that), but never next to a restore.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.backups import BackupError, backup_database, backups_dir_for, verify
from storage.disk import DiskFullError, describe_free, human_bytes, is_disk_full
from storage.integrity import find_problem
from storage.locks import TOOL_ROLES, DataDirLock, instance_lock
from storage.restore import restore_command


def _tool_lock(data_dir: Path, role: str) -> DataDirLock | None:
    """The instance lock, or None when a running Likeness holds it; BackupError when another tool does."""
    lock = instance_lock(data_dir)
    if lock.acquire(role):
        return lock
    if lock.holder_role() in TOOL_ROLES:
        raise BackupError(f"{lock.describe_holder()} is using {Path(data_dir).resolve()}; try again when it has "
                          "finished")
    return None


def _backup(db_path: Path, store_dir: Path, keep: int) -> tuple[int, str]:
    problem = find_problem(db_path, store_dir)
    if problem is not None or not db_path.exists():
        return 1, f"not backed up: {problem or f'{db_path} does not exist'}"
    conn = sqlite3.connect(db_path, timeout=15, isolation_level=None)
    try:
        target = backup_database(conn, backups_dir_for(db_path), keep)
    finally:
        conn.close()
    return 0, f"backed up to {target} ({human_bytes(target.stat().st_size)})"


def _verify(db_path: Path, store_dir: Path) -> tuple[int, str]:
    lines = [f"{'ok' if problem is None else 'DAMAGED'}: {problem or path}" for path, problem in
             verify(db_path, store_dir)]
    return (0 if all(line.startswith("ok") for line in lines) else 1), "\n".join(lines)


def run_command(mode: str, db_path: Path, store_dir: Path, keep: int, file: Path | None = None,
                force: bool = False) -> tuple[int, str]:
    db_path, store_dir = Path(db_path), Path(store_dir)
    if mode == "restore":
        return restore_command(db_path, store_dir, file, force)
    try:
        lock = _tool_lock(db_path.parent, mode)
        try:
            return _backup(db_path, store_dir, keep) if mode == "backup" else _verify(db_path, store_dir)
        finally:
            if lock is not None:
                lock.release()
    except BackupError as exc:
        return 1, f"{mode} failed: {exc}"
    except DiskFullError as exc:
        return 1, f"{mode} failed: {exc}"
    except (OSError, sqlite3.Error) as exc:
        if is_disk_full(exc, db_path.parent):
            return 1, f"{mode} failed: the disk is full ({describe_free(db_path.parent)})"
        return 1, f"{mode} failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
