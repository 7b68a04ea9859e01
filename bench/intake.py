"""Photo intake speed on a 12 MP phone-sized JPEG, and what detecting faces on a downscaled copy saves.

    python -m bench.intake --json

Both detection timings are taken side by side in the same run, on the same image, looking for the same smallest
face (in original pixels); only the size of the searched copy differs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time

import numpy as np
from PIL import Image
from skimage import data as skdata

from intake.faces import DETECT_MAX_SIDE, FaceBox, detect_faces
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


def measure_intake(data: bytes, rules: IntakeRules, photos: int) -> dict:
    inspect_photo(data, "warmup.jpg", 1, rules)  # loads the cascades and Pillow plugins
    timings, codes = [], set()
    for index in range(1, photos + 1):
        elapsed, result = _timed(inspect_photo, data, f"IMG_{index:04d}.JPG", index, rules)
        timings.append(elapsed)
        codes.add(result.verdict.code)
    return {
        "median_ms_per_photo": round(statistics.median(timings), 1),
        "min_ms_per_photo": round(min(timings), 1),
        "max_ms_per_photo": round(max(timings), 1),
        "verdicts": sorted(codes),
    }


def _iou(a: FaceBox, b: FaceBox) -> float:
    inter = a.intersection_area(b)
    return inter / (a.area + b.area - inter)


def measure_detection(data: bytes, rules: IntakeRules, repeats: int) -> dict:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    min_size = max(24, rules.min_face_px // 3)  # what intake looks for
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


def run(photos: int, repeats: int, family: str) -> dict:
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
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--photos", type=int, default=7, help="intake runs to take the median of")
    parser.add_argument("--repeats", type=int, default=3, help="detection runs per variant")
    parser.add_argument("--family", default="sd15", help="model family whose intake rules to use")
    args = parser.parse_args(argv)
    if args.photos < 1 or args.repeats < 1:
        parser.error("--photos and --repeats must be at least 1")
    report = run(args.photos, args.repeats, args.family)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
