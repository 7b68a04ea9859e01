"""Restoring the database from a backup, only when it is safe, and never from one that would lose confirmed work.

A restore holds the data directory's instance lock for its whole run, so Likeness cannot start meanwhile, and
refuses while a bot, console, worker or another tool holds the directory. Without a file named it takes the newest
backup that is sound and consistent with the store (its rows account for every stored file, see
storage/consistency.py); an empty backup (no users) or one that lacks rows for stored files is refused with the
reason, unless `--force`. The backup is copied beside the database first (a full disk stops it there, with the
free space, leaving no partial file), then the current files are moved into `damaged-<time>/` and the copy
renamed into place. Finally every forget recorded in the forget journal is applied again to the restored database.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from storage import forget
from storage.backups import BackupError, backups_dir_for, list_backups, move_aside
from storage.consistency import StoreAccount, account_for_store
from storage.db import connect
from storage.disk import describe_free, free_bytes, human_bytes, is_disk_full
from storage.files import FileStore, fsync_dir
from storage.integrity import find_problem
from storage.locks import DataDirBusy, hold_instance, is_held, worker_lock

RESTORE_MARGIN_BYTES = 1024 * 1024  # room for the WAL and the journal switch after the copy


@dataclass(frozen=True)
class RestoreReport:
    backup: Path
    moved_aside: Path | None
    users: int
    jobs: int
    erased_again: int = 0  # forgotten users the backup still held, erased again


@dataclass(frozen=True)
class Verdict:
    backup: Path
    problem: str | None  # why it cannot or should not be used; None when it is safe


def judge(backup: Path, store_dir: Path) -> Verdict:
    """Whether restoring this backup is safe: sound, not empty, and accounting for every stored file."""
    problem = find_problem(backup)
    if problem is not None:
        return Verdict(backup, f"it is damaged: {problem}")
    account: StoreAccount = account_for_store(backup, store_dir)
    if account.empty:
        return Verdict(backup, "it is empty (no users: the backup taken before anyone used Likeness)"
                       + (f", while the store holds {account.stored} file(s)" if account.stored else ""))
    if account.unaccounted:
        return Verdict(backup, account.describe() + ", which restoring it would orphan")
    return Verdict(backup, None)


def choose_backup(db_path: Path, store_dir: Path, file: Path | None, force: bool) -> Path:
    """The backup to restore, or BackupError saying why none is safe (and that --force overrides it)."""
    if file is not None:
        if not file.exists():
            raise BackupError(f"{file} does not exist")
        verdict = judge(file, store_dir)
        if verdict.problem is None or (force and find_problem(file) is None):
            return file
        hint = "" if verdict.problem.startswith("it is damaged") else " (`restore --force FILE` restores it anyway)"
        raise BackupError(f"{file.name} was not restored: {verdict.problem}{hint}")
    candidates = list(reversed(list_backups(backups_dir_for(db_path))))
    if not candidates:
        raise BackupError(f"no backup found in {backups_dir_for(db_path)}")
    verdicts = [judge(backup, store_dir) for backup in candidates]
    for verdict in verdicts:
        if verdict.problem is None:
            return verdict.backup
    if force:
        sound = [v.backup for v in verdicts if not v.problem.startswith("it is damaged")]
        if sound:
            return sound[0]
    newest = verdicts[0]
    hint = ("; `./run-bot restore --force` restores the newest undamaged one anyway"
            if any(not v.problem.startswith("it is damaged") for v in verdicts) else "")
    raise BackupError(f"no backup is safe to restore ({len(verdicts)} checked); the newest, {newest.backup.name}, "
                      f"was refused: {newest.problem}{hint}")


def _copy_beside(backup: Path, db_path: Path) -> Path:
    """The backup copied next to the database and fsynced; on a full disk nothing is left behind."""
    needed = backup.stat().st_size + RESTORE_MARGIN_BYTES
    if free_bytes(db_path.parent) < needed:
        raise BackupError(f"the disk is full ({describe_free(db_path.parent)}; the restore needs about "
                          f"{human_bytes(needed)}); nothing was changed")
    temp = db_path.with_name(f".{db_path.name}.restore-{os.getpid()}")
    try:
        shutil.copyfile(backup, temp)
        with open(temp, "rb+") as fh:
            os.fsync(fh.fileno())
    except OSError as exc:
        temp.unlink(missing_ok=True)
        if is_disk_full(exc, db_path.parent):
            raise BackupError(f"the disk is full ({describe_free(db_path.parent)}); nothing was changed") from None
        raise
    return temp


def restore_database(db_path: Path, store_dir: Path, backup: Path | None = None, *,
                     force: bool = False) -> RestoreReport:
    """Put a safe backup in place of the database (see the module notes). Likeness must be stopped."""
    db_path = Path(db_path)
    try:
        lock = hold_instance(db_path.parent, "restore")
    except DataDirBusy as exc:
        raise BackupError(f"{exc} A restore needs Likeness stopped.") from None
    try:
        worker = worker_lock(db_path.parent)
        if is_held(worker.path):
            raise BackupError(f"a worker ({worker.describe_holder()}) is running on {db_path.parent.resolve()}; "
                              "stop it first")
        chosen = choose_backup(db_path, Path(store_dir), backup, force)
        temp = _copy_beside(chosen, db_path)
        try:
            aside = move_aside(db_path)
            os.replace(temp, db_path)
        finally:
            temp.unlink(missing_ok=True)
        fsync_dir(db_path.parent)
        return _after_restore(db_path, Path(store_dir), chosen, aside)
    finally:
        lock.release()


def _after_restore(db_path: Path, store_dir: Path, backup: Path, aside: Path | None) -> RestoreReport:
    """WAL mode back on, migrations, and every recorded forget applied again."""
    conn = connect(db_path)
    try:
        again = forget.finish_at_start(conn, FileStore(store_dir), worker_running=False)
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
        job_count = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    finally:
        conn.close()
    return RestoreReport(backup, aside, users, job_count, len(again))


def describe(report: RestoreReport, db_path: Path) -> str:
    aside = f"; the previous files were moved to {report.moved_aside}" if report.moved_aside else ""
    again = (f"; {report.erased_again} forgotten user(s) it still held were erased again" if report.erased_again
             else "")
    return (f"restored {db_path} from {report.backup.name} ({report.users} user(s), {report.jobs} job(s)){again}"
            f"{aside}")


def restore_command(db_path: Path, store_dir: Path, file: Path | None, force: bool) -> tuple[int, str]:
    try:
        return 0, describe(restore_database(db_path, store_dir, file, force=force), Path(db_path))
    except BackupError as exc:
        return 1, f"restore failed: {exc}"
    except (OSError, sqlite3.Error) as exc:
        if is_disk_full(exc, Path(db_path).parent):
            return 1, f"restore failed: the disk is full ({describe_free(Path(db_path).parent)})"
        return 1, f"restore failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
