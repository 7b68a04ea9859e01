"""The square head-and-shoulders training crop, levelled and centred by the facial landmarks.

Without landmarks (pets, or a face the landmark model cannot read) the crop is the face box's square_crop. With
them, the crop turns the photo so the eyes are level, puts the eyes' midpoint on the vertical centre line, and keeps
the face centre `face_center_at` of the way down, so every crop of a subject has its face in the same place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from intake.face_landmarks import FaceLandmarks, cut_patch
from intake.faces import FaceBox
from intake.formats import encode_png
from intake.rules import IntakeRules

LEVEL_TOLERANCE_DEGREES = 1.0  # eyes within this of level are not turned (saves a resampling)
EYES_ABOVE_FACE_CENTRE = 0.12  # in face-box widths: where the eyes sit above the detector box's centre


@dataclass(frozen=True)
class CropPlan:
    center: tuple[float, float]  # the crop's centre, in the photo's pixels
    side: int  # in the photo's pixels
    roll: float  # degrees counter-clockwise the face leans; the crop turns it back (0: not turned)

    @property
    def box(self) -> FaceBox:
        """The axis-aligned square with the same centre and side."""
        half = self.side / 2
        return FaceBox(round(self.center[0] - half), round(self.center[1] - half), self.side, self.side)


def natural_side(face: FaceBox, rules: IntakeRules) -> int:
    """The crop's side before it is fitted into the photo: the face width plus the margin on each side."""
    return max(round(face.w * (1 + 2 * rules.margin)), 1)


def plan_crop(face: FaceBox | None, landmarks: FaceLandmarks | None, width: int, height: int,
              rules: IntakeRules) -> CropPlan:
    if face is None:  # no face wanted: the centred square
        side = min(width, height)
        return CropPlan(((width - side) // 2 + side / 2, (height - side) // 2 + side / 2), side, 0.0)
    if landmarks is None:
        box = face.square_crop(width, height, rules.margin, rules.face_center_at)
        return CropPlan(box.center, box.w, 0.0)
    side = natural_side(face, rules)
    roll = landmarks.roll if abs(landmarks.roll) > LEVEL_TOLERANCE_DEGREES else 0.0
    down = side * (0.5 - rules.face_center_at) + EYES_ABOVE_FACE_CENTRE * face.w  # eyes to crop centre
    eye_x, eye_y = landmarks.eye_midpoint
    radians = math.radians(roll)
    center_x, center_y = eye_x + down * math.sin(radians), eye_y + down * math.cos(radians)
    side = min(side, width, height)  # never larger than the photo; then moved inside it
    half = side / 2
    center_x = min(max(center_x, half), width - half)
    center_y = min(max(center_y, half), height - half)
    return CropPlan((center_x, center_y), side, roll)


def render_crop(image: Image.Image, plan: CropPlan, resolution: int) -> bytes:
    """The crop as a resolution x resolution PNG. Level crops resample once with Lanczos; turned ones shrink by
    area averaging and then turn, and corners that reach past the photo's edge repeat its edge pixels."""
    if plan.roll == 0.0:
        box = plan.box
        # reducing_gap=3 shrinks big photos in two passes; Pillow documents it as indistinguishable from one pass
        crop = image.resize((resolution, resolution), Image.Resampling.LANCZOS,
                            box=(box.x, box.y, box.right, box.bottom), reducing_gap=3.0)
        return encode_png(crop)
    pixels = np.asarray(image.convert("RGB"))
    patch, _ = cut_patch(pixels, plan.center, plan.side, plan.roll, resolution)
    return encode_png(Image.fromarray(patch))
