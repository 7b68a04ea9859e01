"""After a forget's sweep nothing of the user is readable on disk while the process still runs: not in the
database file, not in its WAL, not in the store, not in a backup, not in a `damaged-*` copy a restore set aside,
not in the forget journal."""

import hashlib
import json
import shutil
import sqlite3

from storage import adapters, backups, files, generations, jobs, photos
from storage.db import connect
from storage.forget import sweep_forgotten, tombstone_user
from storage.subjects import create_subject, ensure_user

ANN, BOB = 900000000000000001, 900000000000000002
NAME, TRIGGER = "Zanzibarina Quoxley", "qqzxv"
CAPTION, PROMPT = "caption-marker-7781 by the sea", "prompt-marker-5521 on the moon"


def _populate(conn, store) -> list[bytes]:
    ensure_user(conn, ANN, NAME)
    ensure_user(conn, BOB, "Bob")
    ann = create_subject(conn, owner_id=ANN, trigger=TRIGGER, trigger_key=TRIGGER, class_noun="person",
                         display_name=NAME, family="tiny-sd15")
    face = b"ann's face bytes " * 50
    sha = hashlib.sha256(face).hexdigest()
    original = store.write_bytes(files.photo_original_key(ANN, ann.id, sha, "jpg"), face)
    photos.add_accepted_photo(
        conn, ann.id, original_name="zanzibarina-selfie.jpg", sha256=sha, phash="ab" * 8, original_path=original,
        crop_path=files.photo_crop_key(ANN, ann.id, sha), size_bytes=len(face), width=1, height=1,
        face_box=(0, 0, 1, 1), caption=CAPTION,
    )
    train = jobs.enqueue_job(conn, "train", {"trigger": TRIGGER, "name": NAME}, user_id=ANN)
    weights = store.write_bytes(files.adapter_root(ANN, train) + "/pytorch_lora_weights.safetensors", b"lora" * 99)
    adapter_sha = store.sha256(weights)
    adapters.record_adapter(conn, owner_id=ANN, job_id=train, family="tiny-sd15", base_model="tiny-sd15",
                            path=weights, sha256=adapter_sha, size_bytes=396, params={"trigger": TRIGGER},
                            subject_ids=[ann.id])
    gen = generations.create_generation(conn, user_id=ANN, kind="imagine", prompt=f"{TRIGGER} person {PROMPT}",
                                        negative_prompt="blurry", seed=1, params={}, adapters=[], subject_ids=[ann.id])
    jobs.enqueue_job(conn, "generate", {"generation_id": gen}, user_id=ANN)
    texts = [NAME, TRIGGER, CAPTION, PROMPT, sha, adapter_sha, "zanzibarina-selfie"]
    return [t.encode() for t in texts] + [t.encode("utf-16-le") for t in texts] + [bytes.fromhex(sha)]


def _users_in(path):
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT display_name FROM users ORDER BY id")]
    finally:
        conn.close()


def _files_on_disk(root):
    return [p for p in root.rglob("*") if p.is_file()]


def test_forgotten_markers_are_nowhere_on_disk_while_the_process_runs(tmp_path, store):
    db = tmp_path / "likeness.sqlite3"
    conn = connect(db)
    other = connect(db)  # another process's connection (the worker's), left open
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the worst case: every old page copy stays in the WAL
    markers = _populate(conn, store)
    old_backup = backups.backup_database(conn, tmp_path / "backups", keep=3)  # a backup from before the forget
    readable_aside, unreadable_aside = tmp_path / "damaged-1", tmp_path / "damaged-2"
    for folder in (readable_aside, unreadable_aside):  # what earlier restores set aside, with Ann in them
        folder.mkdir()
        shutil.copyfile(old_backup, folder / "likeness.sqlite3")
    with open(unreadable_aside / "likeness.sqlite3", "r+b") as fh:
        fh.write(b"garbage header" * 8)  # set aside because it was damaged: it cannot be searched
    for n in range(30):  # rows of someone else, so Ann's pages are rewritten rather than dropped whole
        ensure_user(conn, 1000 + n, f"someone {n}")
    other.execute("SELECT count(*) FROM users").fetchone()
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 0
    assert any(m in db.read_bytes() + wal.read_bytes() for m in markers)  # the scan can find them

    assert tombstone_user(conn, ANN) is not None
    assert sweep_forgotten(conn, store) == [ANN]

    scanned = [db, wal, *_files_on_disk(store.root), *_files_on_disk(tmp_path / "backups"),
               *_files_on_disk(readable_aside), tmp_path / "forget-journal.json"]
    found = [(path.name, marker) for path in scanned if path.exists() for marker in markers + [str(ANN).encode()]
             if marker in path.read_bytes()]
    assert found == []
    assert wal.stat().st_size == 0
    kept = backups.list_backups(tmp_path / "backups")
    assert len(kept) == 2 and kept[0] == old_backup  # the old backup was cleaned, not lost; a fresh one was taken
    assert _users_in(old_backup) == ["Bob"]
    assert _users_in(readable_aside / "likeness.sqlite3") == ["Bob"]
    assert not unreadable_aside.exists()  # it could not be searched, so it went
    journal = json.loads((tmp_path / "forget-journal.json").read_text())
    assert journal["pending"] == {} and len(journal["forgotten"]) == 1
    assert other.execute("SELECT count(*) FROM users").fetchone()[0] == 31  # Bob and the others remain
    other.close()
    conn.close()
