"""Offline face detection: dlib's HOG detector first, then OpenCV's Haar cascades, upright and then tilted.

Measured on bench/face_set.py (table in the README, "Photos"): HOG alone misses small and downcast faces, Haar
alone misses tilted ones; tried in turn, on the upright image and then on copies turned by TILT_ANGLES, they find
far more. The search stops at the first pass that finds a face, so an ordinary selfie costs one HOG pass. Frontal
Haar faces come from the `alt2` cascade (`default` fired on coins and gravel); the profile cascade runs on the image
and its mirror (it only knows faces that look left). Big photos are searched as a downscaled copy; boxes are
mapped back to the input's pixels.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

log = logging.getLogger(__name__)

DETECT_MAX_SIDE = 800  # longest side of the searched copy: a 256 px face in a 12 MP photo is still 51 px there
CASCADE_WINDOW_PX = 24  # the Haar training window; smaller faces cannot be found at any scale
HOG_WINDOW_PX = 80  # dlib's HOG window; smaller faces are only found in an upsampled copy
HOG_UPSAMPLE_MAX_SIDE = 640  # only copies up to this size are upsampled for HOG (the cost grows 4x)
HOG_MIN_SCORE = 0.3  # dlib's default is 0; its false box on the astronaut's glove scores 0.12, her face 1.16
TILT_ANGLES = (25, -25, 45, -45)  # degrees counter-clockwise; tried only when the upright search finds nothing
FRONTAL_CASCADE = "haarcascade_frontalface_alt2.xml"
PROFILE_CASCADE = "haarcascade_profileface.xml"
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 9  # 5 (the Haar-only default) fired on tilted coins and retina copies; 3 on chelsea's cat
TILTED_MIN_NEIGHBORS = 12  # turned copies: profile Haar only, stricter (frontal Haar fired on turned coins)
HAAR_ONLY_MIN_NEIGHBORS = 5  # the previous Haar-only detector, kept for the side-by-side benchmark
SAME_FACE_OVERLAP = 0.5  # two boxes sharing half of the smaller one are the same face


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned face box in pixels: top-left corner, width and height."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.w, self.h

    def scaled(self, factor: float) -> FaceBox:
        """The same box in an image resized by `factor`."""
        return FaceBox(round(self.x * factor), round(self.y * factor), round(self.w * factor), round(self.h * factor))

    def mirrored(self, image_width: int) -> FaceBox:
        """The same box in the horizontally flipped image."""
        return FaceBox(image_width - self.right, self.y, self.w, self.h)

    def intersection_area(self, other: FaceBox) -> int:
        iw = min(self.right, other.right) - max(self.x, other.x)
        ih = min(self.bottom, other.bottom) - max(self.y, other.y)
        return max(iw, 0) * max(ih, 0)

    def overlap(self, other: FaceBox) -> float:
        """Intersection over the smaller box's area (1.0 when one box holds the other)."""
        smaller = min(self.area, other.area)
        return self.intersection_area(other) / smaller if smaller else 0.0

    def clamped(self, width: int, height: int) -> FaceBox:
        """The part of the box inside a width x height image."""
        x0, y0 = min(max(self.x, 0), width), min(max(self.y, 0), height)
        x1, y1 = min(max(self.right, 0), width), min(max(self.bottom, 0), height)
        return FaceBox(x0, y0, x1 - x0, y1 - y0)

    def square_crop(self, width: int, height: int, margin: float, face_center_at: float = 0.45) -> FaceBox:
        """A head-and-shoulders square around this face, inside a width x height image.

        The side is the face width times (1 + 2 * margin). The face centre sits `face_center_at` of the way down,
        leaving more room below (neck, shoulders) than above (hair). A square that does not fit is first moved
        inside the image, then shrunk to the image's shorter side, so the crop never needs artificial padding.
        """
        side = min(round(self.w * (1 + 2 * margin)), width, height)
        side = max(side, 1)
        cx, cy = self.center
        left = round(cx - side / 2)
        top = round(cy - side * face_center_at)
        left = min(max(left, 0), width - side)
        top = min(max(top, 0), height - side)
        return FaceBox(left, top, side, side)


@dataclass(frozen=True)
class FoundFace:
    """A detected face: its axis-aligned box in the input's pixels, and the tilt of the copy it was found in
    (degrees counter-clockwise; 0 when found upright), which the landmark search starts from."""

    box: FaceBox
    tilt: float = 0.0


_cascades: dict[str, cv2.CascadeClassifier] = {}
_cascade_lock = threading.Lock()  # CascadeClassifier keeps per-call scratch state, so calls are serialised
_hog_lock = threading.Lock()
_hog: list = []


def _cascade(name: str) -> cv2.CascadeClassifier:
    """Load a bundled cascade once; the caller holds _cascade_lock."""
    classifier = _cascades.get(name)
    if classifier is None:
        path = Path(cv2.data.haarcascades) / name
        classifier = cv2.CascadeClassifier(str(path))
        if classifier.empty():
            raise RuntimeError(f"OpenCV face cascade {path} is missing; install opencv-python-headless<5")
        _cascades[name] = classifier
    return classifier


def _run_cascade(name: str, gray: np.ndarray, min_size: int, neighbors: int = MIN_NEIGHBORS) -> list[FaceBox]:
    with _cascade_lock:
        found = _cascade(name).detectMultiScale(
            gray, scaleFactor=SCALE_FACTOR, minNeighbors=neighbors, minSize=(min_size, min_size)
        )
    return [FaceBox(int(x), int(y), int(w), int(h)) for x, y, w, h in found]


def _run_hog(gray: np.ndarray, upsample: int) -> list[FaceBox]:
    with _hog_lock:
        if not _hog:
            _hog.append(dlib.get_frontal_face_detector())
        found, _scores, _kinds = _hog[0].run(gray, upsample, HOG_MIN_SCORE)
    return [FaceBox(r.left(), r.top(), r.width(), r.height()) for r in found]


def detection_scale(width: int, height: int, max_side: int | None) -> float:
    """How much to shrink an image before searching it (1.0: not at all)."""
    if not max_side or max(width, height) <= max_side:
        return 1.0
    return max_side / max(width, height)


def to_gray(image: np.ndarray) -> np.ndarray:
    """8-bit grayscale from an RGB(A) or grayscale array."""
    if image.ndim == 2:
        return image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)
    code = cv2.COLOR_RGBA2GRAY if image.shape[2] == 4 else cv2.COLOR_RGB2GRAY
    return cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), code)


def merge_same_faces(faces: list[FaceBox]) -> list[FaceBox]:
    """Keep the largest of boxes that cover the same face; result sorted by area, largest first."""
    kept: list[FaceBox] = []
    for face in sorted(faces, key=lambda f: f.area, reverse=True):
        if all(face.overlap(other) < SAME_FACE_OVERLAP for other in kept):
            kept.append(face)
    return kept


def _upright_faces(gray: np.ndarray, search_min: int, profiles: bool, turned: bool = False) -> list[FaceBox]:
    """HOG, then frontal Haar (not on turned copies), then profile Haar: the first that finds anything wins."""
    upsample = 1 if search_min < HOG_WINDOW_PX and max(gray.shape) <= HOG_UPSAMPLE_MAX_SIDE else 0
    faces = [f for f in _run_hog(gray, upsample) if f.w >= search_min * 0.8]
    if faces:
        return faces
    faces = [] if turned else _run_cascade(FRONTAL_CASCADE, gray, search_min)
    if not faces and profiles:
        neighbors = TILTED_MIN_NEIGHBORS if turned else MIN_NEIGHBORS
        faces = _run_cascade(PROFILE_CASCADE, gray, search_min, neighbors)
        mirror = np.ascontiguousarray(gray[:, ::-1])
        faces += [f.mirrored(gray.shape[1]) for f in _run_cascade(PROFILE_CASCADE, mirror, search_min, neighbors)]
    return faces


def tilted_copy(gray: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The image turned counter-clockwise on a canvas that holds all of it (edges extended), and the 2x3 matrix
    from the input's pixels to the copy's."""
    height, width = gray.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    new_w, new_h = round(width * cos + height * sin), round(width * sin + height * cos)
    matrix[0, 2] += (new_w - width) / 2
    matrix[1, 2] += (new_h - height) / 2
    turned = cv2.warpAffine(gray, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return turned, matrix


def _box_from_tilted(box: FaceBox, matrix: np.ndarray) -> FaceBox:
    """A box found in a tilted copy, as an upright box of the same size around the same face centre."""
    cx, cy = cv2.invertAffineTransform(matrix) @ np.array([*box.center, 1.0])
    return FaceBox(round(cx - box.w / 2), round(cy - box.h / 2), box.w, box.h)


def _search(gray: np.ndarray, search_min: int, profiles: bool, tilts: tuple[float, ...]) -> list[FoundFace]:
    faces = _upright_faces(gray, search_min, profiles)
    if faces:
        return [FoundFace(face) for face in faces]
    for degrees in tilts:
        turned, matrix = tilted_copy(gray, degrees)
        faces = _upright_faces(turned, search_min, profiles, turned=True)
        if faces:
            return [FoundFace(_box_from_tilted(face, matrix), degrees) for face in faces]
    return []


def find_faces(
    rgb: np.ndarray, *, min_size: int = CASCADE_WINDOW_PX, max_side: int | None = DETECT_MAX_SIDE,
    profiles: bool = True, tilts: tuple[float, ...] = TILT_ANGLES,
) -> list[FoundFace]:
    """Faces in an RGB (or grayscale) uint8 image, in its own pixels, largest first, with the tilt they were
    found at. `min_size` is the smallest face width to look for, in the input's pixels. Images longer than
    `max_side` are searched at that size (None: at full size). `profiles` adds the profile cascade; `tilts` are
    the turned copies tried when nothing is found upright (empty: upright only)."""
    gray = to_gray(rgb)
    height, width = gray.shape
    if height < CASCADE_WINDOW_PX or width < CASCADE_WINDOW_PX:
        return []
    scale = detection_scale(width, height, max_side)
    if scale < 1.0:
        size = (max(round(width * scale), 1), max(round(height * scale), 1))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    search_min = max(CASCADE_WINDOW_PX, round(min_size * scale))
    found = _search(gray, search_min, profiles, tuple(tilts))
    tilt = {}
    boxes = []
    for face in found:
        box = face.box.scaled(1 / scale) if scale < 1.0 else face.box
        box = box.clamped(width, height)
        if box.w > 0 and box.h > 0:
            boxes.append(box)
            tilt[box] = face.tilt
    return [FoundFace(box, tilt[box]) for box in merge_same_faces(boxes)]


def detect_faces(
    rgb: np.ndarray, *, min_size: int = CASCADE_WINDOW_PX, max_side: int | None = DETECT_MAX_SIDE,
    profiles: bool = True, tilts: tuple[float, ...] = TILT_ANGLES,
) -> list[FaceBox]:
    """The boxes of find_faces: faces in the input's pixels, sorted by area, largest first."""
    return [face.box for face in find_faces(rgb, min_size=min_size, max_side=max_side, profiles=profiles,
                                            tilts=tilts)]


def haar_faces(rgb: np.ndarray, *, min_size: int = CASCADE_WINDOW_PX,
               max_side: int | None = DETECT_MAX_SIDE) -> list[FaceBox]:
    """The previous default (Haar frontal, then profile, upright only), kept for the side-by-side benchmark."""
    gray = to_gray(rgb)
    height, width = gray.shape
    if height < CASCADE_WINDOW_PX or width < CASCADE_WINDOW_PX:
        return []
    scale = detection_scale(width, height, max_side)
    if scale < 1.0:
        gray = cv2.resize(gray, (max(round(width * scale), 1), max(round(height * scale), 1)),
                          interpolation=cv2.INTER_AREA)
    search_min = max(CASCADE_WINDOW_PX, round(min_size * scale))
    neighbors = HAAR_ONLY_MIN_NEIGHBORS
    faces = _run_cascade(FRONTAL_CASCADE, gray, search_min, neighbors)
    if not faces:
        faces = _run_cascade(PROFILE_CASCADE, gray, search_min, neighbors)
        mirror = np.ascontiguousarray(gray[:, ::-1])
        faces += [f.mirrored(gray.shape[1]) for f in _run_cascade(PROFILE_CASCADE, mirror, search_min, neighbors)]
    if scale < 1.0:
        faces = [f.scaled(1 / scale).clamped(width, height) for f in faces]
    return merge_same_faces(faces)
