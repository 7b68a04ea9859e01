"""Face detection on scikit-image and matplotlib photos (upright, tilted, cut by the frame), and the FaceBox
geometry that intake and generation share."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from bench.face_set import face_cases, hits, non_face_cases, people, rotated
from intake.faces import FaceBox, detect_faces, detection_scale, find_faces, haar_faces, merge_same_faces
from tests import corpus


def upscaled(pixels: np.ndarray, factor: int) -> np.ndarray:
    image = Image.fromarray(pixels)
    return np.asarray(image.resize((image.width * factor, image.height * factor), Image.Resampling.LANCZOS))


def iou(a: FaceBox, b: FaceBox) -> float:
    inter = a.intersection_area(b)
    return inter / (a.area + b.area - inter)


def test_astronaut_has_one_frontal_face_in_the_upper_middle():
    faces = detect_faces(corpus.astronaut_rgb())
    assert len(faces) == 1
    face = faces[0]
    cx, cy = face.center
    assert 150 < cx < 300 and 60 < cy < 200 and 60 < face.w < 160
    assert face.w == face.h


def test_profile_face_is_found_when_no_frontal_one_is():
    assert detect_faces(corpus.camera_rgb(), profiles=False, tilts=()) == []
    faces = detect_faces(corpus.camera_rgb())
    assert len(faces) == 1
    cx, cy = faces[0].center
    assert 150 < cx < 300 and 80 < cy < 200  # the cameraman's head, not the tripod or the sky


def test_grayscale_input_gives_the_same_faces_as_rgb():
    assert detect_faces(skdata.camera()) == detect_faces(corpus.camera_rgb())


@pytest.mark.parametrize("photo", [skdata.chelsea, skdata.coffee, skdata.rocket], ids=lambda f: f.__name__)
def test_no_face_in_photos_without_people(photo):
    assert detect_faces(photo()) == []


def test_two_faces_are_sorted_by_area():
    canvas = np.asarray(Image.open(io.BytesIO(corpus.two_faces_jpeg())))
    faces = detect_faces(canvas)
    assert len(faces) == 2
    assert faces[0].area >= faces[1].area
    assert faces[0].overlap(faces[1]) == 0.0


def test_downscaled_detection_maps_back_to_full_size_boxes():
    big = upscaled(corpus.astronaut_rgb(), 4)  # 2048 px
    full = detect_faces(big, min_size=200, max_side=None)
    small = detect_faces(big, min_size=200, max_side=512)
    assert len(full) == len(small) == 1
    assert iou(full[0], small[0]) > 0.7
    assert detection_scale(2048, 1024, 512) == 0.25
    assert detection_scale(400, 300, 512) == 1.0 and detection_scale(4000, 3000, None) == 1.0


def test_tiny_images_have_no_faces():
    assert detect_faces(np.zeros((10, 10, 3), np.uint8)) == []


def test_concurrent_detection_matches_sequential():
    images = [corpus.astronaut_rgb(), corpus.camera_rgb(), skdata.chelsea(), corpus.astronaut_rgb()[:, ::-1]]
    expected = [detect_faces(image) for image in images]
    assert [len(faces) for faces in expected] == [1, 1, 0, 1]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(detect_faces, images)) == expected


@pytest.mark.parametrize("degrees", [-45, -30, 30, 45])
def test_tilted_faces_are_found_where_haar_alone_misses_them(degrees):
    load, mark = people()["astronaut"]
    pixels, face = rotated(load(), degrees, mark)
    assert not any(hits(face, box.as_tuple()) for box in haar_faces(pixels))
    found = find_faces(pixels)
    assert found and hits(face, found[0].box.as_tuple()), found


def test_a_face_found_only_in_a_turned_copy_reports_that_turn():
    load, mark = people()["cameraman"]
    pixels, face = rotated(load(), -40, mark)
    assert not any(hits(face, box.as_tuple()) for box in detect_faces(pixels, tilts=()))
    found = find_faces(pixels)
    assert found and hits(face, found[0].box.as_tuple()) and found[0].tilt != 0


def test_detection_set_sample_recall_and_no_false_positives():
    """A slice of bench/face_set.py (the bench runs all of it): every face found, nothing found on non-faces."""
    faces = [case for case in face_cases(angles=(-30, 15), scales=(1.0,))
             if case.person != "cameraman" and " cut " not in case.name]
    assert len(faces) == 8
    for case in faces:
        assert any(hits(case.face, box.as_tuple()) for box in detect_faces(case.pixels)), case.name
    for case in non_face_cases(angles=(0,))[:6]:
        assert detect_faces(case.pixels) == [], case.name


def test_facebox_geometry():
    box = FaceBox(10, 20, 30, 40)
    assert (box.area, box.right, box.bottom, box.center) == (1200, 40, 60, (25.0, 40.0))
    assert box.as_tuple() == (10, 20, 30, 40)
    assert box.scaled(2) == FaceBox(20, 40, 60, 80)
    assert box.mirrored(100) == FaceBox(60, 20, 30, 40)
    assert box.clamped(25, 50) == FaceBox(10, 20, 15, 30)
    assert box.overlap(FaceBox(10, 20, 15, 40)) == 1.0  # one holds the other
    assert box.overlap(FaceBox(100, 100, 5, 5)) == 0.0
    with pytest.raises(AttributeError):
        box.x = 5  # frozen


def test_square_crop_keeps_the_face_inside_the_image():
    face = FaceBox(200, 100, 100, 100)
    crop = face.square_crop(1000, 800, margin=0.8)
    assert crop.w == crop.h == 260
    assert crop.x <= face.x and crop.right >= face.right and crop.y <= face.y and crop.bottom >= face.bottom
    cx, cy = face.center
    assert crop.x + crop.w / 2 == pytest.approx(cx, abs=1)
    assert (cy - crop.y) / crop.h == pytest.approx(0.45, abs=0.01)  # more room below the face for shoulders

    corner = FaceBox(0, 0, 100, 100).square_crop(1000, 800, margin=0.8)
    assert (corner.x, corner.y, corner.w) == (0, 0, 260)  # moved inside, not padded

    narrow = FaceBox(10, 100, 120, 120).square_crop(150, 800, margin=0.8)
    assert narrow.w == 150 and narrow.x == 0 and narrow.y <= 100 and narrow.bottom >= 220  # shrunk to fit


def test_merge_keeps_the_largest_of_overlapping_boxes():
    merged = merge_same_faces([FaceBox(0, 0, 50, 50), FaceBox(5, 5, 60, 60), FaceBox(200, 0, 40, 40)])
    assert merged == [FaceBox(5, 5, 60, 60), FaceBox(200, 0, 40, 40)]
