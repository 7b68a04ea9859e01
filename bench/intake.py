"""Photo intake on a 12 MP phone-sized JPEG, face detection quality, and how well identities separate.

    python -m bench.intake --json

Side by side in one run: intake time with today's pipeline (HOG then Haar, tilted copies, landmarks, identity
descriptor) against the previous one (Haar only, no landmarks or descriptor); detection on a downscaled copy against
full size; recall and false positives of both detectors on bench/face_set.py; identity separation (the smallest
distance between different people over the largest within one person) on scikit-image's and matplotlib's faces.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time

import numpy as np
from PIL import Image
from skimage import data as skdata

import intake.photos
from bench.face_set import face_cases, mirrored, non_face_cases, people, rotated, scaled, score_detector
from intake.face_landmarks import face_identity
from intake.faces import DETECT_MAX_SIDE, FaceBox, FoundFace, detect_faces, find_faces, haar_faces
from intake.identity import distances
from intake.photos import IntakeRules, inspect_photo

PHONE_SIZE = (4000, 3000)  # 12 MP, landscape as phones store it


def phone_sized_jpeg(width: int = PHONE_SIZE[0], height: int = PHONE_SIZE[1]) -> bytes:
    """The astronaut upscaled to the phone's height, widened with edge pixels, with EXIF (orientation, GPS)."""
    portrait = Image.fromarray(skdata.astronaut()).resize((height, height), Image.Resampling.LANCZOS)
    pad = (width - height) // 2
    pixels = np.pad(np.asarray(portrait), ((0, 0), (pad, width - height - pad), (0, 0)), mode="edge")
    rng = np.random.default_rng(0)  # sensor noise, so the JPEG is as large as a real one
    noisy = np.clip(pixels.astype(np.int16) + rng.normal(0, 3, pixels.shape).astype(np.int16), 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 7.5), 3: "E", 4: (4.0, 53.0, 1.0)}
    buffer = io.BytesIO()
    Image.fromarray(noisy.astype(np.uint8)).save(buffer, format="JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def _timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return (time.perf_counter() - start) * 1000, result


@contextlib.contextmanager
def haar_pipeline():
    """Intake as it was before dlib: Haar cascades only, no landmarks (unlevelled crop), no descriptor."""
    saved = intake.photos.find_faces, intake.photos._identity
    intake.photos.find_faces = lambda pixels, min_size: [FoundFace(b) for b in haar_faces(pixels, min_size=min_size)]
    intake.photos._identity = lambda pixels, face: None
    try:
        yield
    finally:
        intake.photos.find_faces, intake.photos._identity = saved


def _intake_ms(data: bytes, rules: IntakeRules, index: int) -> tuple[float, str]:
    elapsed, result = _timed(inspect_photo, data, f"IMG_{index:04d}.JPG", index, rules)
    return elapsed, result.verdict.code


def measure_intake(data: bytes, rules: IntakeRules, photos: int) -> dict:
    inspect_photo(data, "warmup.jpg", 1, rules)  # loads the detectors, dlib's models and Pillow plugins
    timings, haar_timings, codes = [], [], set()
    for index in range(1, photos + 1):  # interleaved, so load on the machine hits both alike
        elapsed, code = _intake_ms(data, rules, index)
        timings.append(elapsed)
        codes.add(code)
        with haar_pipeline():
            elapsed, code = _intake_ms(data, rules, index)
        haar_timings.append(elapsed)
        codes.add(code)
    median, haar = statistics.median(timings), statistics.median(haar_timings)
    return {
        "median_ms_per_photo": round(median, 1),
        "median_ms_per_photo_haar": round(haar, 1),
        "time_ratio_vs_haar": round(median / haar, 2),
        "min_ms_per_photo": round(min(timings), 1),
        "max_ms_per_photo": round(max(timings), 1),
        "verdicts": sorted(codes),
    }


def measure_detectors(small: bool) -> dict:
    """Recall and false positives of the previous (Haar) and current default detectors on the same set."""
    faces = face_cases(angles=(-45, -15, 0, 30), scales=(1.0,)) if small else face_cases()
    non_faces = non_face_cases(angles=(0,)) if small else non_face_cases()
    report = {"detection_set": f"{len(faces)} face images, {len(non_faces)} without faces"}
    for suffix, detector in (("_haar", haar_faces), ("", detect_faces)):
        score = score_detector(lambda pixels: [b.as_tuple() for b in detector(pixels)], faces, non_faces)
        report[f"detector_recall{suffix}"] = round(score.recall, 3)
        report[f"false_positive_rate{suffix}"] = round(score.false_positive_rate, 3)
        report[f"stray_boxes_on_faces{suffix}"] = score.stray_boxes
        report[f"missed{suffix}"] = list(score.missed)
        report[f"false_positives{suffix}"] = list(score.false_positives)
    return report


def identity_descriptors() -> dict[str, list]:
    """Each person's descriptors over upright, mirrored, tilted (15 and 30 degrees) and smaller copies."""
    found: dict[str, list] = {}
    for person, (load, face) in people().items():
        vectors = []
        for flip in (False, True):
            for angle in (0, 15, -15, 30, -30):
                for factor in (1.0, 0.6):
                    pixels, mark = scaled(load(), factor, face)
                    pixels, mark = mirrored(pixels, mark) if flip else (pixels, mark)
                    pixels, mark = rotated(pixels, angle, mark)
                    faces = [f for f in find_faces(pixels) if _on_mark(f.box, mark)]
                    if faces:
                        vectors.append(face_identity(pixels, faces[0]).descriptor)
        found[person] = vectors
    return found


def _on_mark(box: FaceBox, mark) -> bool:
    cx, cy = box.center
    return abs(cx - mark.cx) <= mark.width / 2 and abs(cy - mark.cy) <= mark.width / 2


def measure_identity() -> dict:
    found = identity_descriptors()
    within = {p: float(distances(v, v).max()) if len(v) > 1 else 0.0 for p, v in found.items()}
    names = sorted(found)
    across = {f"{a}/{b}": float(distances(found[a], found[b]).min())
              for i, a in enumerate(names) for b in names[i + 1:] if found[a] and found[b]}
    return {
        "identity_separation": round(min(across.values()) / max(within.values()), 3),
        "identity_max_within": {p: round(d, 3) for p, d in within.items()},
        "identity_min_across": {pair: round(d, 3) for pair, d in across.items()},
        "identity_faces_used": {p: len(v) for p, v in found.items()},
    }


def _iou(a: FaceBox, b: FaceBox) -> float:
    inter = a.intersection_area(b)
    return inter / (a.area + b.area - inter)


def measure_detection(data: bytes, rules: IntakeRules, repeats: int) -> dict:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    min_size = max(24, rules.min_face_px // 2)  # what intake looks for
    full_ms, small_ms = [], []
    full_faces = small_faces = []
    for _ in range(repeats):  # interleaved, so load on the machine hits both alike
        elapsed, full_faces = _timed(detect_faces, pixels, min_size=min_size, max_side=None)
        full_ms.append(elapsed)
        elapsed, small_faces = _timed(detect_faces, pixels, min_size=min_size, max_side=DETECT_MAX_SIDE)
        small_ms.append(elapsed)
    full, small = statistics.median(full_ms), statistics.median(small_ms)
    same_face = bool(full_faces and small_faces and _iou(full_faces[0], small_faces[0]) > 0.5)
    return {
        "detect_full_ms": round(full, 1),
        "detect_downscaled_ms": round(small, 1),
        "downscale_speedup": round(full / small, 2),
        "detect_max_side": DETECT_MAX_SIDE,
        "faces_full": len(full_faces),
        "faces_downscaled": len(small_faces),
        "same_face_found": same_face,
    }


def run(photos: int, repeats: int, family: str, small_set: bool = False) -> dict:
    rules = IntakeRules.for_family(family)
    data = phone_sized_jpeg()
    report = {
        "benchmark": "intake",
        "family": family,
        "image": f"{PHONE_SIZE[0]}x{PHONE_SIZE[1]}",
        "jpeg_bytes": len(data),
        "photos": photos,
        "cpu_count": os.cpu_count(),
    }
    report.update(measure_intake(data, rules, photos))
    report.update(measure_detection(data, rules, repeats))
    report.update(measure_detectors(small_set))
    report.update(measure_identity())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--photos", type=int, default=7, help="intake runs to take the median of")
    parser.add_argument("--repeats", type=int, default=3, help="detection runs per variant")
    parser.add_argument("--family", default="sd15", help="model family whose intake rules to use")
    parser.add_argument("--small-set", action="store_true", help="a quarter of the detection test set (quick look)")
    args = parser.parse_args(argv)
    if args.photos < 1 or args.repeats < 1:
        parser.error("--photos and --repeats must be at least 1")
    report = run(args.photos, args.repeats, args.family, args.small_set)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
