"""Online backups, restore and verify: make data, back up, damage the database, restore, and the data is back."""

import os

from storage import backups
from storage.db import connect
from storage.locks import worker_lock
from storage.subjects import ensure_user

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
    code, line = backups.run_command("verify", db, tmp_path / "store", keep=3)
    assert code == 1 and line.startswith("DAMAGED: ") and str(target) in line

    code, line = backups.run_command("restore", db, tmp_path / "store", keep=3)
    assert code == 0 and "restored" in line and "2 user(s)" in line
    assert _names(db) == ["Ann", "Bob"]
    aside = list(tmp_path.glob("damaged-*"))
    assert len(aside) == 1 and (aside[0] / "likeness.sqlite3").exists()  # nothing deleted
    assert backups.run_command("verify", db, tmp_path / "store", keep=3)[0] == 0


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
        code, line = backups.run_command("restore", db, tmp_path / "store", keep=1)
    finally:
        lock.release()
    assert code == 1 and "stop it" in line


def test_restore_without_backups_says_so(tmp_path):
    code, line = backups.run_command("restore", tmp_path / "likeness.sqlite3", tmp_path / "store", keep=1)
    assert code == 1 and "no backup found" in line
