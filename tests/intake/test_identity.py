"""One person per subject: identity descriptors of real faces, the odd-one-out rule, and the rejection sentence."""

from __future__ import annotations

import numpy as np
import pytest

from bench.face_set import mirrored, people, rotated, scaled
from intake.face_landmarks import face_identity
from intake.faces import find_faces
from intake.identity import (
    DIFFERENT_PERSON_DISTANCE,
    SAME_PERSON_DISTANCE,
    descriptor_bytes,
    descriptor_from_bytes,
    distances,
    look_alike,
    numbers_text,
    odd_photo_reason,
    odd_photos,
)
from intake.photos import inspect_batch
from intake.rules import IntakeRules
from tests import corpus

TINY = IntakeRules.for_family("tiny-sd15")


def _variant(person: str, angle: float = 0, flip: bool = False, factor: float = 1.0) -> np.ndarray:
    load, mark = people()[person]
    pixels, mark = scaled(load(), factor, mark)
    if flip:
        pixels, mark = mirrored(pixels, mark)
    return rotated(pixels, angle, mark)[0]


@pytest.fixture(scope="module")
def descriptors() -> dict[str, list[np.ndarray]]:
    """Three looks at the astronaut and at Grace Hopper, and the cameraman once."""
    looks = {"astronaut": [(0, False), (20, False), (0, True)], "hopper": [(0, False), (-20, True), (0, True)],
             "cameraman": [(0, False)]}
    found = {}
    for person, variants in looks.items():
        found[person] = []
        for angle, flip in variants:
            pixels = _variant(person, angle, flip)
            faces = find_faces(pixels)
            assert faces, f"{person} {angle} {flip}: no face"
            found[person].append(face_identity(pixels, faces[0]).descriptor)
    return found


def test_one_person_is_close_and_different_people_are_far(descriptors):
    for person in ("astronaut", "hopper"):
        same = distances(descriptors[person], descriptors[person])
        assert same.max() < SAME_PERSON_DISTANCE, (person, same.round(2))
    across = distances(descriptors["astronaut"], descriptors["hopper"] + descriptors["cameraman"])
    assert across.min() > DIFFERENT_PERSON_DISTANCE, across.round(2)


def test_the_cameraman_among_astronaut_photos_is_named_against_photos_1_to_3(descriptors):
    new = list(enumerate(descriptors["astronaut"] + descriptors["cameraman"], start=1))
    odd = odd_photos(new)
    assert [o.number for o in odd] == [4]
    assert odd[0].others == (1, 2, 3) and odd[0].stored == 0
    reason = odd_photo_reason(odd[0])
    assert reason.startswith("this looks like a different person from photos 1 to 3")
    assert f"over {DIFFERENT_PERSON_DISTANCE}" in reason


def test_stored_photos_count_as_the_reference(descriptors):
    odd = odd_photos([(1, descriptors["cameraman"][0])], stored=descriptors["astronaut"][:2])
    assert [o.number for o in odd] == [1] and odd[0].stored == 2 and odd[0].others == ()
    assert "from the 2 photos already stored" in odd_photo_reason(odd[0])
    assert odd_photos([(1, descriptors["astronaut"][2])], stored=descriptors["astronaut"][:2]) == []


def test_fewer_than_three_photos_say_nothing(descriptors):
    assert odd_photos([(1, descriptors["astronaut"][0]), (2, descriptors["cameraman"][0])]) == []
    assert odd_photos([(1, descriptors["cameraman"][0])], stored=descriptors["astronaut"][:1]) == []


def test_no_majority_means_no_rejection(descriptors):
    split = [descriptors["astronaut"][0], descriptors["astronaut"][1], descriptors["hopper"][0],
             descriptors["hopper"][1]]
    assert odd_photos(list(enumerate(split, start=1))) == []
    everyone = [descriptors["astronaut"][0], descriptors["hopper"][0], descriptors["cameraman"][0]]
    assert odd_photos(list(enumerate(everyone, start=1))) == []


def test_family_members_who_look_alike(descriptors):
    assert look_alike(descriptors["astronaut"][:2], descriptors["astronaut"][2:]) is not None
    assert look_alike(descriptors["astronaut"], descriptors["hopper"]) is None
    assert look_alike([], descriptors["hopper"]) is None


def test_descriptor_bytes_round_trip_and_junk_is_refused(descriptors):
    vector = descriptors["astronaut"][0]
    data = descriptor_bytes(vector)
    assert len(data) == 512 and np.array_equal(descriptor_from_bytes(data), vector.astype(np.float32))
    assert descriptor_from_bytes(b"x" * 100) is None and descriptor_from_bytes(None) is None
    assert descriptor_from_bytes(np.full(128, np.nan, dtype="<f4").tobytes()) is None


def test_numbers_text():
    assert numbers_text([3]) == "photo 3"
    assert numbers_text([2, 1]) == "photos 1 and 2"
    assert numbers_text([1, 2, 3, 4]) == "photos 1 to 4"
    assert numbers_text([1, 3, 6]) == "photos 1, 3 and 6"


def test_a_batch_with_someone_else_rejects_that_photo_with_the_reason():
    files = [(f"astronaut{i}.jpg", corpus.jpeg(_variant("astronaut", angle, flip)))
             for i, (angle, flip) in enumerate([(0, False), (20, False), (0, True)], start=1)]
    files.append(("camera.jpg", corpus.camera_jpeg()))
    results = inspect_batch(files, TINY)
    assert [r.verdict.code for r in results] == ["ok", "ok", "ok", "different_person"]
    rejected = results[3]
    assert rejected.prepared is None and not rejected.verdict.accepted
    assert rejected.verdict.message.startswith(
        "photo 4 (camera.jpg): this looks like a different person from photos 1 to 3")
    assert all(len(r.prepared.embedding) == 512 for r in results[:3])
    # The same photos against stored ones: the cameraman alone is compared with the astronaut's stored photos.
    stored = [r.prepared.embedding for r in results[:3]]
    alone = inspect_batch([("camera.jpg", corpus.camera_jpeg())], TINY, known_embeddings=stored)
    assert alone[0].verdict.code == "different_person" and "the 3 photos already stored" in alone[0].verdict.message
    two = inspect_batch([files[0], ("camera.jpg", corpus.camera_jpeg())], TINY)
    assert [r.verdict.code for r in two] == ["ok", "ok"]  # fewer than 3: nothing to compare against
