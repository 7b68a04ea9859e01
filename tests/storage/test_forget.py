"""Forgetting a user leaves nothing of them in any table or any file."""

import hashlib

import pytest

from storage import adapters, consent, files, generations, jobs, photos
from storage.forget import sweep_forgotten, tombstone_user
from storage.subjects import is_forgotten
from tests.storage.conftest import make_subject

ANN, BOB = 900000000000000001, 900000000000000002


def _populate(conn, store):
    ann = make_subject(conn, ANN, "rraj")
    bob = make_subject(conn, BOB, "bbob")
    face = b"ann's face"
    sha = hashlib.sha256(face).hexdigest()
    store.write_bytes(files.photo_original_key(ANN, ann.id, sha, "jpg"), face)
    store.write_bytes(files.photo_crop_key(ANN, ann.id, sha), face + b" crop")
    photos.add_accepted_photo(
        conn, ann.id, original_name="me.jpg", sha256=sha, phash="00" * 8,
        original_path=files.photo_original_key(ANN, ann.id, sha, "jpg"),
        crop_path=files.photo_crop_key(ANN, ann.id, sha), size_bytes=len(face), width=1, height=1,
        face_box=(0, 0, 1, 1), caption="a photo of rraj person",
    )
    train = jobs.enqueue_job(conn, "train", {"subject_ids": [ann.id]}, user_id=ANN)
    adapter_rel = files.adapter_root(ANN, train) + "/pytorch_lora_weights.safetensors"
    store.write_bytes(adapter_rel, b"lora")
    adapters.record_adapter(conn, owner_id=ANN, job_id=train, family="tiny-sd15", base_model="tiny-sd15",
                            path=adapter_rel, sha256="c" * 64, size_bytes=4, params={}, subject_ids=[ann.id])
    consent.grant_access(conn, ann.id, user_id=BOB)
    consent.grant_access(conn, bob.id, user_id=ANN)  # a grant TO ann also mentions her
    # Bob made a picture of Ann; it shows her likeness, so it goes too.
    shared = generations.create_generation(
        conn, user_id=BOB, kind="imagine", prompt="rraj person", negative_prompt="", seed=1, params={},
        adapters=[], subject_ids=[ann.id])
    store.write_bytes(files.generation_root(BOB, shared) + "/0.png", b"ann by bob")
    own = generations.create_generation(
        conn, user_id=BOB, kind="imagine", prompt="bbob person", negative_prompt="", seed=1, params={},
        adapters=[], subject_ids=[bob.id])
    store.write_bytes(files.generation_root(BOB, own) + "/0.png", b"bob alone")
    jobs.enqueue_job(conn, "generate", {"generation_id": shared}, user_id=ANN)
    return ann, bob, own


def _mentions(conn, user_id: int, words: list[str]) -> list[str]:
    """Every table cell equal to the user id or containing one of the words."""
    found = []
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for row in conn.execute(f"SELECT * FROM {table}"):
            for key in row.keys():
                value = row[key]
                if value == user_id or (isinstance(value, str) and (
                        str(user_id) in value or any(w in value for w in words))):
                    found.append(f"{table}.{key}={value!r}")
    return found


def test_forget_removes_every_row_and_file(conn, store):
    ann, bob, bobs_own = _populate(conn, store)
    report = tombstone_user(conn, ANN)
    assert (report.subjects, report.photos, report.adapters, report.grants, report.jobs_stopped) == (1, 1, 1, 1, 2)
    assert not consent.may_use(conn, BOB, None, ann.id)  # cut off before the sweep
    assert sweep_forgotten(conn, store) == [ANN]
    assert _mentions(conn, ANN, ["rraj", "ann"]) == []
    assert not [f for f in store.list_files() if f.startswith(f"users/{ANN}")]
    contents = [store.read_bytes(f) for f in store.list_files()]
    assert contents == [b"bob alone"]  # only Bob's own picture is left
    assert generations.get_generation(conn, bobs_own) is not None


def test_forget_waits_for_a_running_job_then_finishes(conn, store):
    _populate(conn, store)
    job = jobs.claim_next_job(conn, "worker", 60, ("train",))
    tombstone_user(conn, ANN)
    assert jobs.heartbeat(conn, job.id, "worker", 60).cancel_requested
    assert sweep_forgotten(conn, store) == []  # the trainer may still be writing
    assert is_forgotten(conn, ANN)
    jobs.finish_job(conn, job.id, "worker", "cancelled")
    assert sweep_forgotten(conn, store) == [ANN]
    assert _mentions(conn, ANN, ["rraj"]) == []


def test_a_crash_half_way_through_the_sweep_is_finished_by_the_next_one(conn, store, monkeypatch):
    _populate(conn, store)
    tombstone_user(conn, ANN)
    real_delete = store.delete
    calls = []

    def crash_after_first_delete(rel):
        calls.append(rel)
        real_delete(rel)
        if len(calls) == 1:
            raise OSError("power cut")

    monkeypatch.setattr(store, "delete", crash_after_first_delete)
    with pytest.raises(OSError, match="power cut"):
        sweep_forgotten(conn, store)
    monkeypatch.undo()
    assert len(calls) == 1  # the crash came after the first file deletion, before any row was deleted
    assert [f for f in store.list_files() if f.startswith(f"users/{ANN}")]  # half way: Ann's files remain
    assert _mentions(conn, ANN, ["rraj"])  # and so do her rows
    assert is_forgotten(conn, ANN)  # the tombstone survived the crash
    assert sweep_forgotten(conn, store) == [ANN]
    assert _mentions(conn, ANN, ["rraj"]) == []
    assert not [f for f in store.list_files() if f.startswith(f"users/{ANN}")]


def test_forgetting_an_unknown_user_is_a_no_op(conn):
    assert tombstone_user(conn, 12345) is None
