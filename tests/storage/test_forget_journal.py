"""Forget as a journal: a forget killed half-way is finished at the next start, and a forgotten user that a restore
from an older backup brings back is erased again, automatically, while someone who comes back later is kept."""

import json
import sqlite3
import time

import pytest

from storage import backups, erasure, forget_journal, jobs
from storage.db import connect
from storage.files import FileStore, photo_crop_key, user_root
from storage.forget import finish_at_start, sweep_forgotten, tombstone_user
from storage.restore import restore_database
from storage.subjects import ensure_user
from tests.storage.conftest import make_subject

ANN, BOB = 900000000000000001, 900000000000000002
TRIGGER = "qqzxv"


class Killed(BaseException):
    """Stands for SIGKILL at that point: nothing after it runs, nothing catches it."""


@pytest.fixture
def world(tmp_path):
    conn = connect(tmp_path / "likeness.sqlite3")
    store = FileStore(tmp_path / "store")
    ann = make_subject(conn, ANN, TRIGGER)
    store.write_bytes(photo_crop_key(ANN, ann.id, "ab" * 32), b"ann's crop")
    make_subject(conn, BOB, "bbob")
    yield conn, store, tmp_path
    conn.close()


def _holds_ann(path) -> bool:
    return TRIGGER.encode() in path.read_bytes()


def _user_ids(conn) -> list[int]:
    return [row[0] for row in conn.execute("SELECT id FROM users ORDER BY id")]


def test_a_forget_killed_before_the_backups_is_finished_at_the_next_start(world, monkeypatch):
    conn, store, data = world
    old = backups.backup_database(conn, data / "backups", keep=3)

    def killed(*args, **kwargs):
        raise Killed()

    monkeypatch.setattr(erasure, "erase_from_copies", killed)
    tombstone_user(conn, ANN)
    with pytest.raises(Killed):
        sweep_forgotten(conn, store)
    assert ANN not in _user_ids(conn) and _holds_ann(old)  # rows gone, backup not yet cleaned
    assert list(forget_journal.pending_users(data)) == [ANN]
    monkeypatch.undo()

    assert finish_at_start(conn, store, worker_running=False) == []
    assert not any(_holds_ann(path) for path in backups.list_backups(data / "backups"))
    assert forget_journal.pending_users(data) == {}
    assert _user_ids(conn) == [BOB]


def test_a_forget_killed_before_its_tombstone_is_finished_at_the_next_start(world, monkeypatch):
    conn, store, data = world
    monkeypatch.setattr("storage.forget.transaction", lambda conn: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        tombstone_user(conn, ANN)
    monkeypatch.undo()
    assert ANN in _user_ids(conn) and list(forget_journal.pending_users(data)) == [ANN]
    finish_at_start(conn, store, worker_running=False)
    assert _user_ids(conn) == [BOB] and store.list_files(user_root(ANN)) == []


def test_a_restore_from_an_older_backup_erases_the_forgotten_user_again(world):
    conn, store, data = world
    old = backups.backup_database(conn, data / "backups", keep=3)
    offsite = data / "offsite-copy.sqlite3"  # a copy the host kept elsewhere, never cleaned by the forget
    offsite.write_bytes(old.read_bytes())
    tombstone_user(conn, ANN)
    assert sweep_forgotten(conn, store) == [ANN]
    conn.close()

    report = restore_database(data / "likeness.sqlite3", data / "store", offsite, force=True)
    assert report.erased_again == 1 and report.users == 1
    conn = connect(data / "likeness.sqlite3")
    try:
        assert _user_ids(conn) == [BOB]
        assert conn.execute("SELECT count(*) FROM subjects WHERE trigger = ?", (TRIGGER,)).fetchone()[0] == 0
    finally:
        conn.close()
    journal = (data / "forget-journal.json").read_text()
    assert str(ANN) not in journal and TRIGGER not in journal  # only a salted hash
    assert len(json.loads(journal)["forgotten"]) == 1


def test_someone_who_comes_back_after_a_forget_is_kept(world):
    conn, store, data = world
    tombstone_user(conn, ANN)
    sweep_forgotten(conn, store)
    time.sleep(0.01)
    ensure_user(conn, ANN, "Ann again")  # the same Discord account starts over
    assert finish_at_start(conn, store, worker_running=False) == []
    assert ANN in _user_ids(conn)


def test_a_dead_workers_running_job_does_not_hold_up_the_erasure_at_start(world):
    conn, store, data = world
    job_id = jobs.enqueue_job(conn, "train", {}, user_id=ANN)
    jobs.claim_next_job(conn, "dead-worker", 600)
    tombstone_user(conn, ANN)
    assert sweep_forgotten(conn, store) == []  # a running job holds it while a worker may still write
    finish_at_start(conn, store, worker_running=True)
    assert ANN in _user_ids(conn)
    finish_at_start(conn, store, worker_running=False)  # no worker runs: that job's worker is dead
    assert ANN not in _user_ids(conn) and jobs.get_job(conn, job_id) is None


def test_the_journal_is_written_before_anything_is_erased(world, monkeypatch):
    conn, store, data = world
    seen = []
    monkeypatch.setattr("storage.forget.transaction", lambda conn: seen.append(
        forget_journal.pending_users(data)) or (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        tombstone_user(conn, ANN)
    assert list(seen[0]) == [ANN]


def test_a_copy_that_cannot_be_opened_is_deleted_rather_than_kept(tmp_path):
    aside = tmp_path / "damaged-1"
    aside.mkdir()
    (aside / "likeness.sqlite3").write_bytes(b"not a database, but it holds " + TRIGGER.encode() * 100)
    assert erasure.erase_from_copies(tmp_path, [ANN]) == {"clean": 0, "erased": 0, "removed": 1}
    assert not aside.exists()


def test_an_empty_copy_is_left_alone(tmp_path):
    aside = tmp_path / "damaged-1"
    aside.mkdir()
    (aside / "likeness.sqlite3").write_bytes(b"")
    sqlite3.connect(tmp_path / "unrelated.sqlite3").close()
    assert erasure.erase_from_copies(tmp_path, [ANN]) == {"clean": 1, "erased": 0, "removed": 0}
    assert (aside / "likeness.sqlite3").exists()
