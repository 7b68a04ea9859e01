"""An offline face-detection test set: the faces that installed packages ship, tilted, scaled, mirrored and cut
by the frame, beside photos and textures without people.

People: scikit-image's astronaut (Eileen Collins) and cameraman, and matplotlib's Grace Hopper. Each face is marked
by hand (centre and width in the upright photo) and the mark is carried through every transform, so a detection
counts when it lands on that face at a plausible size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from matplotlib import cbook
from PIL import Image
from skimage import data as skdata

ANGLES = (-45, -30, -15, 0, 15, 30, 45)
SCALES = (1.0, 0.6)
CUT_SHARE = 0.25  # a cut photo loses this share of the face's width (or height) to the frame
NON_FACE_ANGLES = (0, 30, -30)


@dataclass(frozen=True)
class MarkedFace:
    cx: float
    cy: float
    width: float


@dataclass(frozen=True)
class DetectionCase:
    name: str
    person: str | None  # None: no face in the image
    pixels: np.ndarray  # RGB uint8
    face: MarkedFace | None


def _rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype != np.uint8:  # scikit-image ships some as floats in [0, 1]
        pixels = (np.clip(pixels.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    if pixels.ndim == 2:
        return np.ascontiguousarray(np.stack([pixels] * 3, axis=-1))
    return np.ascontiguousarray(pixels[..., :3])


@cache
def hopper_rgb() -> np.ndarray:
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


def people() -> dict[str, tuple[Callable[[], np.ndarray], MarkedFace]]:
    """Each person's upright photo and the hand-marked face in it."""
    return {
        "astronaut": (skdata.astronaut, MarkedFace(221, 124, 88)),
        "cameraman": (lambda: _rgb(skdata.camera()), MarkedFace(220, 155, 80)),
        "hopper": (hopper_rgb, MarkedFace(272, 238, 180)),
    }


def rotated(pixels: np.ndarray, degrees: float, face: MarkedFace | None) -> tuple[np.ndarray, MarkedFace | None]:
    """Rotated counter-clockwise on a canvas that holds the whole photo; edges are extended, not black."""
    height, width = pixels.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    new_w, new_h = round(width * cos + height * sin), round(width * sin + height * cos)
    matrix[0, 2] += new_w / 2 - width / 2
    matrix[1, 2] += new_h / 2 - height / 2
    out = cv2.warpAffine(pixels, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if face is None:
        return out, None
    cx, cy = matrix @ np.array([face.cx, face.cy, 1.0])
    return out, MarkedFace(float(cx), float(cy), face.width)


def scaled(pixels: np.ndarray, factor: float, face: MarkedFace) -> tuple[np.ndarray, MarkedFace]:
    if factor == 1.0:
        return pixels, face
    height, width = pixels.shape[:2]
    size = (round(width * factor), round(height * factor))
    out = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return out, MarkedFace(face.cx * factor, face.cy * factor, face.width * factor)


def mirrored(pixels: np.ndarray, face: MarkedFace) -> tuple[np.ndarray, MarkedFace]:
    return np.ascontiguousarray(pixels[:, ::-1]), MarkedFace(pixels.shape[1] - face.cx, face.cy, face.width)


def cut(pixels: np.ndarray, face: MarkedFace, side: str) -> tuple[np.ndarray, MarkedFace]:
    """The frame passes through the face, CUT_SHARE of its width inside from the face's edge."""
    inset = round(face.cx - face.width / 2 + CUT_SHARE * face.width)
    if side == "left":
        return np.ascontiguousarray(pixels[:, inset:]), MarkedFace(face.cx - inset, face.cy, face.width)
    if side == "right":
        right = round(face.cx + face.width / 2 - CUT_SHARE * face.width)
        return np.ascontiguousarray(pixels[:, :right]), face
    top = round(face.cy - face.width / 2 + CUT_SHARE * face.width)
    return np.ascontiguousarray(pixels[top:]), MarkedFace(face.cx, face.cy - top, face.width)


def face_cases(angles: Iterable[int] = ANGLES, scales: Iterable[float] = SCALES) -> list[DetectionCase]:
    cases = []
    for person, (load, face0) in people().items():
        upright = load()
        for factor in scales:
            small, face1 = scaled(upright, factor, face0)
            for flip in (False, True):
                base, face2 = mirrored(small, face1) if flip else (small, face1)
                for angle in angles:
                    pixels, face = rotated(base, angle, face2)
                    name = f"{person} {angle:+d}deg x{factor}{' mirrored' if flip else ''}"
                    cases.append(DetectionCase(name, person, pixels, face))
        for side in ("left", "right", "top"):
            pixels, face = cut(upright, face0, side)
            cases.append(DetectionCase(f"{person} cut {side}", person, pixels, face))
    return cases


NON_FACES = ("chelsea", "coffee", "rocket", "horse", "coins", "clock", "brick", "grass", "gravel", "moon",
             "immunohistochemistry", "retina", "hubble_deep_field", "cell", "page", "text")


def non_face_cases(angles: Iterable[int] = NON_FACE_ANGLES) -> list[DetectionCase]:
    cases = []
    for name in NON_FACES:
        upright = _rgb(getattr(skdata, name)())
        for angle in angles:
            pixels, _ = rotated(upright, angle, None)
            cases.append(DetectionCase(f"{name} {angle:+d}deg", None, pixels, None))
    return cases


def hits(face: MarkedFace, box: tuple[int, int, int, int]) -> bool:
    """A box on the marked face: its centre within half a face width, its size within 0.4x to 2.5x."""
    x, y, w, h = box
    near = math.hypot(x + w / 2 - face.cx, y + h / 2 - face.cy) <= face.width / 2
    return near and 0.4 * face.width <= w <= 2.5 * face.width


@dataclass(frozen=True)
class DetectionScore:
    recall: float  # share of face images whose face was found
    false_positive_rate: float  # share of face-free images with any detection
    stray_boxes: int  # detections on face images that miss the face
    missed: tuple[str, ...]
    false_positives: tuple[str, ...]


def score_detector(detect: Callable[[np.ndarray], list[tuple[int, int, int, int]]],
                   faces: list[DetectionCase], non_faces: list[DetectionCase]) -> DetectionScore:
    missed, stray = [], 0
    for case in faces:
        boxes = detect(case.pixels)
        if not any(hits(case.face, box) for box in boxes):
            missed.append(case.name)
        stray += sum(not hits(case.face, box) for box in boxes)
    fired = [case.name for case in non_faces if detect(case.pixels)]
    return DetectionScore(
        recall=1 - len(missed) / len(faces), false_positive_rate=len(fired) / len(non_faces), stray_boxes=stray,
        missed=tuple(missed), false_positives=tuple(fired),
    )
