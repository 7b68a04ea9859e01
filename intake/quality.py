"""Photo quality measures: exposure, sharpness (variance of the Laplacian) and the perceptual hash.

Measures are plain numbers; `judge_*` compare them with an `IntakeRules` and raise `PhotoRejected` for clearly bad
photos or return warnings (reasons without the `photo N (name): ` label) for borderline ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import imagehash
import numpy as np
from PIL import Image

from intake.faces import FaceBox, to_gray
from intake.formats import PhotoRejected
from intake.rules import IntakeRules

SHARPNESS_FACE_PX = 128  # faces are compared at one size, so a 12 MP selfie and a 512 px one score alike
SHARPNESS_REFERENCE_STD = 50.0  # contrast is normalised away, so a dim face is not also called blurry
MIN_CONTRAST_STD = 10.0
PHASH_THUMBNAIL_PX = 256  # phash only looks at 32x32; hashing a thumbnail is far cheaper than the full photo


@dataclass(frozen=True)
class Exposure:
    mean: float
    p5: float  # darkest 5% of pixels are at or below this level (0-255)
    p95: float  # brightest 5% are at or above this
    clipped_bright: float  # fraction of pixels at 250 or more


def measure_exposure(gray: np.ndarray) -> Exposure:
    histogram = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    total = histogram.sum()
    cumulative = np.cumsum(histogram) / total
    levels = np.arange(256)
    return Exposure(
        mean=float((histogram * levels).sum() / total),
        p5=float(np.searchsorted(cumulative, 0.05)),
        p95=float(np.searchsorted(cumulative, 0.95)),
        clipped_bright=float(histogram[250:].sum() / total),
    )


def measure_sharpness(gray_face: np.ndarray) -> float:
    """Variance of the Laplacian of the face, resized to 128 px and scaled to a standard contrast."""
    height, width = gray_face.shape
    interpolation = cv2.INTER_AREA if width > SHARPNESS_FACE_PX else cv2.INTER_CUBIC
    face = cv2.resize(gray_face, (SHARPNESS_FACE_PX, SHARPNESS_FACE_PX), interpolation=interpolation)
    face = face.astype(np.float64)
    std = max(float(face.std()), MIN_CONTRAST_STD)
    laplacian = cv2.Laplacian(face, cv2.CV_64F)
    return float(laplacian.var() * (SHARPNESS_REFERENCE_STD / std) ** 2)


def face_gray(pixels: np.ndarray, box: FaceBox) -> np.ndarray:
    return to_gray(pixels[box.y : box.bottom, box.x : box.right])


def perceptual_hash(pixels: np.ndarray) -> str:
    """ImageHash's 64-bit DCT hash as 16 hex digits, from a thumbnail."""
    height, width = pixels.shape[:2]
    scale = min(1.0, PHASH_THUMBNAIL_PX / max(height, width))
    if scale < 1.0:
        size = (max(round(width * scale), 1), max(round(height * scale), 1))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return str(imagehash.phash(Image.fromarray(pixels)))


def hash_distance(phash_a: str, phash_b: str) -> int | None:
    """Hamming distance between two hex hashes; None when either is not a hash of the same length."""
    try:
        a, b = imagehash.hex_to_hash(phash_a), imagehash.hex_to_hash(phash_b)
        if a.hash.shape != b.hash.shape:
            return None
        return int(a - b)
    except (ValueError, TypeError, AttributeError):
        return None


def judge_image_exposure(gray: np.ndarray, rules: IntakeRules) -> None:
    """Used when no face was found: a very dark or blown-out photo explains that better than 'no face'."""
    exposure = measure_exposure(gray)
    if exposure.mean < rules.dark_image_mean:
        raise PhotoRejected("too_dark", "the photo is too dark to find a face; retake it in brighter light")
    if exposure.clipped_bright > rules.bright_reject_clipped or exposure.mean > rules.bright_image_mean:
        raise PhotoRejected(
            "too_bright", "the photo is too bright (washed out) to find a face; retake it with less light"
        )


def judge_face_exposure(gray_face: np.ndarray, rules: IntakeRules) -> list[str]:
    """Percentiles rather than the mean, so darker skin in good light is not called underexposed."""
    exposure = measure_exposure(gray_face)
    if exposure.p95 < rules.dark_reject_p95:
        raise PhotoRejected("too_dark", "your face is too dark; retake the photo facing a window or a lamp")
    if exposure.clipped_bright > rules.bright_reject_clipped or exposure.p5 > rules.bright_reject_p5:
        raise PhotoRejected(
            "too_bright", "your face is washed out by too much light; retake the photo out of direct sun or flash"
        )
    warnings = []
    if exposure.p95 < rules.dark_warn_p95:
        warnings.append("your face is a little dark; brighter, even light trains better")
    if exposure.clipped_bright > rules.bright_warn_clipped or exposure.p5 > rules.bright_warn_p5:
        warnings.append("parts of your face are very bright; softer light trains better")
    return warnings


def judge_sharpness(gray_face: np.ndarray, rules: IntakeRules) -> list[str]:
    sharpness = measure_sharpness(gray_face)
    if sharpness < rules.blur_reject:
        raise PhotoRejected(
            "blurry",
            f"your face is blurry (sharpness {sharpness:.0f}, need at least {rules.blur_reject:.0f}); "
            "use a sharp, in-focus photo",
        )
    if sharpness < rules.blur_warn:
        return [f"your face is slightly soft (sharpness {sharpness:.0f}); a sharper photo trains better"]
    return []
