"""Online backups, restore and verify: make data, back up, damage the database, restore, and the data is back."""

import os

import pytest

from storage import backup_commands, backups, generations
from storage.db import connect
from storage.locks import DataDirBusy, hold_instance, worker_lock
from storage.restore import judge, restore_database
from storage.subjects import ensure_user
from tests.storage.conftest import make_subject

ANN = 900000000000000001


def _names(db):
    conn = connect(db)
    try:
        return sorted(row[0] for row in conn.execute("SELECT display_name FROM users"))
    finally:
        conn.close()


def test_backup_damage_restore_brings_the_data_back(tmp_path):
    db = tmp_path / "likeness.sqlite3"
    conn = connect(db)
    ensure_user(conn, ANN, "Ann")
    ensure_user(conn, 2, "Bob")
    target = backups.backup_database(conn, tmp_path / "backups", keep=3)  # while the connection is open
    conn.close()
    assert target.parent == backups.backups_dir_for(db)

    with open(db, "r+b") as fh:
        fh.write(os.urandom(4096))
    code, line = backup_commands.run_command("verify", db, tmp_path / "store", keep=3)
    assert code == 1 and line.startswith("DAMAGED: ") and str(target) in line

    code, line = backup_commands.run_command("restore", db, tmp_path / "store", keep=3)
    assert code == 0 and "restored" in line and "2 user(s)" in line
    assert _names(db) == ["Ann", "Bob"]
    aside = list(tmp_path.glob("damaged-*"))
    assert len(aside) == 1 and (aside[0] / "likeness.sqlite3").exists()  # nothing deleted
    assert backup_commands.run_command("verify", db, tmp_path / "store", keep=3)[0] == 0


def test_backups_rotate_keeping_the_newest(tmp_path):
    conn = connect(tmp_path / "likeness.sqlite3")
    made = [backups.backup_database(conn, tmp_path / "backups", keep=2) for _ in range(4)]
    conn.close()
    assert backups.list_backups(tmp_path / "backups") == made[-2:]


def test_backup_is_due_after_the_interval(tmp_path):
    folder = tmp_path / "backups"
    assert backups.backup_due(folder, 24)
    assert not backups.backup_due(folder, 0)  # 0 turns backups off
    conn = connect(tmp_path / "likeness.sqlite3")
    made = backups.backup_database(conn, folder, keep=2)
    conn.close()
    assert not backups.backup_due(folder, 24)
    assert backups.backup_due(folder, 24, now=made.stat().st_mtime + 24 * 3600 + 1)


def test_restore_refuses_while_a_worker_holds_the_data_directory(tmp_path):
    db = tmp_path / "likeness.sqlite3"
    conn = connect(db)
    backups.backup_database(conn, tmp_path / "backups", keep=1)
    conn.close()
    lock = worker_lock(tmp_path)
    assert lock.acquire()
    try:
        code, line = backup_commands.run_command("restore", db, tmp_path / "store", keep=1)
    finally:
        lock.release()
    assert code == 1 and "stop it" in line


def test_restore_without_backups_says_so(tmp_path):
    code, line = backup_commands.run_command("restore", tmp_path / "likeness.sqlite3", tmp_path / "store", keep=1)
    assert code == 1 and "no backup found" in line


# Safe restores (issue 26): never an empty or inconsistent backup unless forced, never while anything runs.
def _store_file(store_dir, rel, data=b"a stored file"):
    path = store_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _worked_data_dir(tmp_path):
    """The empty backup of the first start, then a user with a subject, a photo file and a generation."""
    db, store_dir = tmp_path / "likeness.sqlite3", tmp_path / "store"
    conn = connect(db)
    empty = backups.backup_database(conn, tmp_path / "backups", keep=5)
    subject = make_subject(conn, ANN, "rraj")
    _store_file(store_dir, f"users/{ANN}/subjects/{subject.id}/crops/{'ab' * 32}.png")
    gen = generations.create_generation(conn, user_id=ANN, kind="imagine", prompt="rraj person",
                                        negative_prompt="", seed=1, params={}, adapters=[], subject_ids=[subject.id])
    _store_file(store_dir, f"users/{ANN}/generations/{gen}/0.png")
    return db, store_dir, conn, empty


def test_restore_refuses_the_empty_first_start_backup_and_says_why(tmp_path):
    db, store_dir, conn, empty = _worked_data_dir(tmp_path)
    conn.close()
    os.truncate(db, 0)  # the database was emptied
    code, line = backup_commands.run_command("restore", db, store_dir, keep=5)
    assert code == 1 and "empty" in line and "--force" in line and empty.name in line
    assert db.stat().st_size == 0 and not list(tmp_path.glob("damaged-*"))  # nothing was touched
    code, line = backup_commands.run_command("restore", db, store_dir, keep=5, force=True)
    assert code == 0 and "0 user(s)" in line  # the host insisted


def test_restore_picks_the_newest_backup_that_accounts_for_the_stored_files(tmp_path):
    db, store_dir, conn, empty = _worked_data_dir(tmp_path)
    good = backups.backup_database(conn, tmp_path / "backups", keep=5)
    conn.close()
    elsewhere = connect(tmp_path / "other" / "likeness.sqlite3")  # a newer backup of an emptied database
    newer = backups.backup_database(elsewhere, tmp_path / "backups", keep=5)
    elsewhere.close()
    _store_file(store_dir, "users/2/exports/77.zip")  # a file whose rows no backup has
    assert judge(newer, store_dir).problem.startswith("it is empty")
    assert judge(good, store_dir).problem.startswith("it lacks the rows of 1 of the 3 stored files (1 users)")
    code, line = backup_commands.run_command("restore", db, store_dir, keep=5)
    assert code == 1 and newer.name in line and "--force" in line
    (store_dir / "users/2/exports/77.zip").unlink()
    report = restore_database(db, store_dir)
    assert report.backup == good and newer.exists() and empty.exists()
    assert _names(db) == ["user900000000000000001"]


def test_restore_refuses_while_likeness_runs_on_the_data_directory(tmp_path):
    db, store_dir, conn, _ = _worked_data_dir(tmp_path)
    backups.backup_database(conn, tmp_path / "backups", keep=5)
    conn.close()
    console = hold_instance(tmp_path, "console")
    try:
        code, line = backup_commands.run_command("restore", db, store_dir, keep=5)
        assert code == 1 and f"the console (pid {os.getpid()})" in line and "stopped" in line
        code, line = backup_commands.run_command("backup", db, store_dir, keep=5)  # online backups still work
        assert code == 0, line
    finally:
        console.release()
    restoring = hold_instance(tmp_path, "restore")
    try:
        with pytest.raises(DataDirBusy, match="the restore"):
            hold_instance(tmp_path, "console")  # and Likeness cannot start during a restore
        code, line = backup_commands.run_command("backup", db, store_dir, keep=5)
        assert code == 1 and "the restore" in line
    finally:
        restoring.release()


def test_a_backup_is_due_at_once_after_a_training_finishes(tmp_path):
    conn = connect(tmp_path / "likeness.sqlite3")
    made = backups.backup_database(conn, tmp_path / "backups", keep=2)
    conn.close()
    taken = made.stat().st_mtime
    assert not backups.backup_due(tmp_path / "backups", 24, changed_at=taken - 1)
    assert backups.backup_due(tmp_path / "backups", 24, changed_at=taken + 1)
    assert not backups.backup_due(tmp_path / "backups", 0, changed_at=taken + 1)  # 0 still means off
