"""The thresholds photo intake applies, per model family: crop size, smallest face, exposure and blur limits."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

DUPLICATE_MAX_DISTANCE = 6  # of 64 phash bits; re-encodes and resizes score 0-2, unrelated photos about 32

# family: (crop resolution, minimum shorter side)
_FAMILIES = {
    "sd15": (512, 512),
    "flux": (512, 512),
    "sdxl": (1024, 768),
    "tiny-sd15": (64, 64),
    "tiny-sdxl": (64, 64),
    "tiny-flux": (64, 64),
}
FAMILIES = tuple(_FAMILIES)


@dataclass(frozen=True)
class IntakeRules:
    family: str
    resolution: int  # side of the square training crop
    min_side_px: int = 64  # shortest accepted image side
    max_bytes: int = 10 * 1024 * 1024  # Discord's per-file upload limit
    max_pixels: int = 64_000_000  # 48-50 MP phone photos pass; a decompression bomb does not
    max_upscale: float = 1.5  # a face is big enough when its crop needs at most this enlargement
    margin: float = 0.8  # added on each side of the face, in face widths: the crop is 2.6 face widths
    face_center_at: float = 0.45  # where the face centre sits from the crop's top (room for shoulders below)
    require_face: bool = True  # False for pets: no face detection, a centred square crop instead
    similar_face_ratio: float = 0.5  # a second face with at least this share of the largest one's area
    blur_reject: float = 15.0  # sharpness score; Gaussian blur of 1.5 px on a 100 px face scores about 11
    blur_warn: float = 50.0  # a 1 px blur on a 100 px face scores about 30
    dark_reject_p95: float = 70.0  # even the brightest 5% of the face is darker than this
    dark_warn_p95: float = 110.0
    bright_reject_clipped: float = 0.35  # share of the face blown out to white (on the tight HOG box)
    bright_warn_clipped: float = 0.10
    bright_reject_p5: float = 200.0  # even the darkest 5% of the face is brighter than this
    bright_warn_p5: float = 170.0
    dark_image_mean: float = 40.0  # whole-image checks, used when no face is found
    bright_image_mean: float = 230.0
    duplicate_distance: int = DUPLICATE_MAX_DISTANCE

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.min_side_px < 1 or self.max_upscale < 1:
            raise ValueError("resolution must be at least 8, min_side_px positive and max_upscale at least 1")
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError("max_bytes and max_pixels must be positive")
        if self.margin < 0 or not 0 < self.face_center_at < 1 or not 0 < self.similar_face_ratio <= 1:
            raise ValueError("margin must be >= 0, face_center_at and similar_face_ratio within (0, 1]")

    @classmethod
    def for_family(cls, family: str, **overrides) -> IntakeRules:
        if family not in _FAMILIES:
            raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
        resolution, min_side_px = _FAMILIES[family]
        rules = cls(family=family, resolution=resolution, min_side_px=min_side_px)
        return dataclasses.replace(rules, **overrides)

    @property
    def min_crop_px(self) -> int:
        """The smallest head-and-shoulders crop accepted: the resolution, enlarged at most max_upscale times."""
        return math.ceil(self.resolution / self.max_upscale)

    @property
    def min_face_px(self) -> int:
        """The narrowest face whose crop (1 + 2 x margin face widths) reaches min_crop_px."""
        return math.ceil(self.min_crop_px / (1 + 2 * self.margin))
