"""Training crops levelled and centred by the landmarks: the same face lands in the same place, tilted or not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.face_set import people, rotated
from intake.aligned_crop import CropPlan, plan_crop
from intake.face_landmarks import FaceLandmarks, face_identity
from intake.faces import FaceBox, find_faces
from intake.photos import inspect_photo
from intake.rules import IntakeRules
from tests import corpus

RULES = IntakeRules.for_family("tiny-sd15", resolution=256)


def _crop_landmarks(person: str, degrees: float) -> FaceLandmarks:
    load, mark = people()[person]
    pixels, _ = rotated(load(), degrees, mark)
    result = inspect_photo(corpus.jpeg(pixels), f"{person}.jpg", 1, RULES)
    assert result.verdict.code == "ok", result.verdict.message
    crop = np.asarray(Image.open(io.BytesIO(result.prepared.crop)).convert("RGB"))
    assert crop.shape == (256, 256, 3)
    faces = find_faces(crop, tilts=())
    assert faces, "the crop shows an upright face"
    return face_identity(crop, faces[0]).landmarks


@pytest.mark.parametrize("person", ["astronaut", "hopper"])
def test_tilted_photos_give_level_crops_with_the_eyes_in_the_same_place(person):
    upright = _crop_landmarks(person, 0)
    for degrees in (30, -30):
        tilted = _crop_landmarks(person, degrees)
        assert abs(tilted.roll) < 4, (degrees, tilted.roll)
        assert abs(tilted.eye_midpoint[0] - 128) < 10 and abs(tilted.eye_midpoint[1] - upright.eye_midpoint[1]) < 10
        assert tilted.eye_distance == pytest.approx(upright.eye_distance, rel=0.15)
    assert abs(upright.roll) < 4 and abs(upright.eye_midpoint[0] - 128) < 10


def test_plan_without_landmarks_is_the_face_box_square():
    face = FaceBox(200, 100, 100, 100)
    plan = plan_crop(face, None, 1000, 800, RULES)
    assert plan.roll == 0 and plan.box == face.square_crop(1000, 800, RULES.margin, RULES.face_center_at)


def test_plan_without_a_face_is_the_centred_square():
    plan = plan_crop(None, None, 451, 300, RULES)
    assert plan == CropPlan((225.0, 150.0), 300, 0.0) and plan.box == FaceBox(75, 0, 300, 300)


def test_plan_levels_the_eyes_and_stays_inside_the_photo():
    face = FaceBox(10, 10, 100, 100)
    eyes_rising_right = FaceLandmarks(((30.0, 60.0), (50.0, 58.0), (80.0, 42.0), (100.0, 40.0), (62.0, 80.0)))
    plan = plan_crop(face, eyes_rising_right, 300, 200, RULES)
    assert plan.roll == pytest.approx(np.degrees(np.arctan2(18, 50)), abs=0.01)  # counter-clockwise lean
    assert plan.side == 200  # 260 wanted, the photo is only 200 high
    box = plan.box
    assert box.x >= 0 and box.y >= 0 and box.right <= 300 and box.bottom <= 200
    level = FaceLandmarks(((30.0, 50.0), (50.0, 50.0), (80.0, 50.0), (100.0, 50.0), (65.0, 75.0)))
    assert plan_crop(face, level, 1000, 1000, RULES).roll == 0.0
