"""Damaged databases are found before anything opens them: 0-byte next to a store, truncated, garbage header or
pages, and garbage in the WAL that would make SQLite drop later commits."""

import os
import shutil
import sqlite3

import pytest

from storage.db import connect
from storage.integrity import DatabaseDamaged, check_database, find_problem, read_wal


def _make(tmp_path, rows: int = 50):
    db = tmp_path / "likeness.sqlite3"
    conn = connect(db)
    for n in range(rows):
        conn.execute("INSERT INTO users (id, display_name, created_at) VALUES (?, ?, 0)", (n + 1, f"user{n}" * 20))
    conn.close()
    return db


def _store_with_files(tmp_path, count: int = 3):
    store = tmp_path / "store"
    (store / "users" / "1").mkdir(parents=True)
    for n in range(count):
        (store / "users" / "1" / f"{n}.png").write_bytes(b"x")
    return store


def test_a_sound_database_passes(tmp_path):
    db = _make(tmp_path)
    assert find_problem(db, _store_with_files(tmp_path)) is None
    check_database(db, tmp_path / "store")


def test_a_new_data_directory_passes(tmp_path):
    assert find_problem(tmp_path / "likeness.sqlite3", tmp_path / "store") is None


def test_an_empty_database_next_to_a_full_store_is_refused_with_the_restore_command(tmp_path):
    db = tmp_path / "likeness.sqlite3"
    db.write_bytes(b"")
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "likeness-20260101T000000.000.sqlite3").write_bytes(b"")
    with pytest.raises(DatabaseDamaged) as error:
        check_database(db, _store_with_files(tmp_path, 10), backups)
    line = str(error.value)
    assert "empty (0 bytes)" in line and "10 file(s)" in line and "./run-bot restore" in line
    assert "\n" not in line


def test_a_schemaless_database_next_to_a_full_store_is_refused(tmp_path):
    db = tmp_path / "likeness.sqlite3"
    sqlite3.connect(db).execute("CREATE TABLE other (x)").connection.close()
    assert "no Likeness tables" in find_problem(db, _store_with_files(tmp_path))


def test_a_truncated_database_is_refused(tmp_path):
    db = _make(tmp_path, rows=400)
    size = db.stat().st_size
    os.truncate(db, size // 2 + 100)
    assert "truncated" in find_problem(db)


def test_a_garbage_header_is_refused(tmp_path):
    db = _make(tmp_path)
    with open(db, "r+b") as fh:
        fh.write(os.urandom(100))
    assert "not a SQLite database" in find_problem(db)


def test_garbage_pages_are_found_by_quick_check(tmp_path):
    db = _make(tmp_path, rows=400)
    page = 4096
    with open(db, "r+b") as fh:
        fh.seek(page * 2)
        fh.write(b"\xff" * page * 3)
    problem = find_problem(db)
    assert problem is not None and "damaged" in problem and "\n" not in problem


def _crash_copy_with_wal(tmp_path):
    """A database whose WAL still holds three commits, as a killed process leaves it."""
    live = tmp_path / "live"
    live.mkdir()
    db = live / "likeness.sqlite3"
    conn = connect(db)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for n in range(3):
        conn.execute("INSERT INTO users (id, display_name, created_at) VALUES (?, 'x', 0)", (n + 1,))
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(str(db) + suffix, crashed / ("likeness.sqlite3" + suffix))
    conn.close()
    return crashed / "likeness.sqlite3"


def test_a_clean_wal_is_read_in_full(tmp_path):
    db = _crash_copy_with_wal(tmp_path)
    report = read_wal(db.with_name(db.name + "-wal"))
    assert report.frames >= 3 and report.lost_commits == 0
    assert find_problem(db) is None


def test_garbage_in_the_wal_before_later_commits_is_reported(tmp_path):
    db = _crash_copy_with_wal(tmp_path)
    wal = db.with_name(db.name + "-wal")
    with open(wal, "r+b") as fh:
        fh.seek(32 + 24 + 100)  # inside the first frame's page
        fh.write(b"garbage" * 10)
    assert read_wal(wal).lost_commits >= 2
    problem = find_problem(db)
    assert "-wal is damaged" in problem and "silently dropped" in problem
    # Refused before SQLite opened it, so the later commits are still in the file for a recovery.
    assert read_wal(wal).lost_commits >= 2
