"""Migration 3: one face identity descriptor per photo, read back per subject and per family group."""

from __future__ import annotations

import numpy as np

from bot.services.photo_intake import look_alike_notes, stored_embeddings
from intake.face_landmarks import DESCRIPTOR_MODEL
from intake.identity import descriptor_bytes
from storage import photos, subjects
from tests.storage.conftest import make_subject


def _photo(conn, subject_id: int, n: int, vector: np.ndarray | None) -> int:
    photo = photos.add_accepted_photo(
        conn, subject_id, original_name=f"{n}.jpg", sha256=f"{n:064d}", phash="f0" * 8,
        original_path=f"users/1/{n}.jpg", crop_path=f"users/1/{n}.png", size_bytes=10, width=4, height=3,
        face_box=(1, 2, 3, 4), caption="",
    )
    if vector is not None:
        photos.add_embedding(conn, photo.id, DESCRIPTOR_MODEL, descriptor_bytes(vector))
    return photo.id


def test_embeddings_are_stored_per_photo_and_removed_with_it(conn):
    rng = np.random.default_rng(0)
    subject = make_subject(conn, 1, "rraj")
    vectors = [rng.normal(size=128).astype(np.float32) for _ in range(3)]
    ids = [_photo(conn, subject.id, n, v) for n, v in enumerate(vectors)]
    _photo(conn, subject.id, 9, None)  # a pet or a photo from before migration 3: no descriptor
    stored = stored_embeddings(conn, subject.id)
    assert [np.frombuffer(blob, "<f4").tolist() for blob in stored] == [v.tolist() for v in vectors]
    assert photos.subject_embeddings(conn, subject.id, "another_model") == [] and stored_embeddings(conn, None) == []
    photos.delete_photo(conn, ids[0])
    assert len(stored_embeddings(conn, subject.id)) == 2


def test_family_members_who_look_alike_get_a_note_and_others_do_not(conn):
    rng = np.random.default_rng(1)
    person, stranger = rng.normal(size=128), rng.normal(size=128)
    twin_a, twin_b, other = (make_subject(conn, 1, t) for t in ("annx", "bobx", "carx"))
    group = subjects.group_id_for(conn, 1, "smiths")
    for subject in (twin_a, twin_b, other):
        subjects.set_subject_group(conn, subject.id, group)
    for n, (subject, base) in enumerate([(twin_a, person), (twin_b, person), (other, stranger)]):
        for k in range(2):
            _photo(conn, subject.id, 10 * n + k, (base + rng.normal(scale=0.01, size=128)) * 0.05)
    twin_a, twin_b, other = (subjects.get_subject(conn, s.id) for s in (twin_a, twin_b, other))
    notes = look_alike_notes(conn, twin_a)
    assert len(notes) == 1 and notes[0].startswith("`annx` and `bobx` look like the same person")
    assert look_alike_notes(conn, other) == []
    subjects.set_subject_group(conn, twin_b.id, None)
    assert look_alike_notes(conn, subjects.get_subject(conn, twin_a.id)) == []
