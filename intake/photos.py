"""Photo intake: every upload gets a verdict (a code and one human sentence) and, when accepted, an EXIF-free
original plus a square head-and-shoulders crop at the family's training resolution.

Torch-free: the bot calls this directly to answer in seconds. Nothing here raises for bad bytes.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from intake.aligned_crop import CropPlan, natural_side, plan_crop, render_crop
from intake.face_landmarks import DESCRIPTOR_MODEL, FaceIdentity, FaceModelsMissing, face_identity
from intake.faces import CASCADE_WINDOW_PX, FaceBox, FoundFace, find_faces, to_gray
from intake.identity import descriptor_bytes, descriptor_from_bytes, odd_photo_reason, odd_photos
from intake.formats import DecodedPhoto, PhotoRejected, decode_photo, encode_original, size_text
from intake.quality import (
    face_gray,
    hash_distance,
    judge_face_exposure,
    judge_image_exposure,
    judge_sharpness,
    perceptual_hash,
)
from intake.rules import DUPLICATE_MAX_DISTANCE, IntakeRules

log = logging.getLogger(__name__)

MAX_FILENAME_CHARS = 60
UPSCALE_WARN_RATIO = 0.8  # warn when the crop must be enlarged by more than a quarter to reach the resolution


@dataclass(frozen=True)
class PhotoVerdict:
    index: int  # 1-based position in the upload
    filename: str  # sanitised, for display only; never used to build a path
    accepted: bool
    code: str
    message: str  # "photo N (name): ..."
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreparedPhoto:
    original: bytes  # oriented RGB re-encode without EXIF/GPS/XMP
    original_ext: str  # "png" | "jpg"
    crop: bytes  # PNG, resolution x resolution
    sha256: str  # of `original`
    phash: str  # 16 hex digits
    face_box: tuple[int, int, int, int]  # x, y, w, h in the oriented original
    width: int
    height: int
    embedding: bytes | None = None  # the face's identity descriptor (intake.identity), None without a face
    embedding_model: str = DESCRIPTOR_MODEL


@dataclass(frozen=True)
class PhotoResult:
    verdict: PhotoVerdict
    prepared: PreparedPhoto | None  # None when rejected


def display_filename(filename: str | None) -> str:
    """The upload's name made safe to show: last path part, no control or invisible characters, capped."""
    text = unicodedata.normalize("NFC", str(filename or ""))
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    text = " ".join(text.split())
    if len(text) > MAX_FILENAME_CHARS:
        stem, dot, ext = text.rpartition(".")
        if dot and 0 < len(ext) <= 5:
            text = stem[: MAX_FILENAME_CHARS - len(ext) - 2] + "\u2026." + ext
        else:
            text = text[: MAX_FILENAME_CHARS - 1] + "\u2026"
    return text or "unnamed"


def photo_label(index: int, display_name: str) -> str:
    return f"photo {index} ({display_name})"


def is_near_duplicate(phash_a: str, phash_b: str, max_distance: int = DUPLICATE_MAX_DISTANCE) -> bool:
    """True when two perceptual hashes differ in at most `max_distance` bits; False for malformed hashes."""
    distance = hash_distance(phash_a, phash_b)
    return distance is not None and distance <= max_distance


def _check_bytes(data: bytes, rules: IntakeRules) -> None:
    if not data:
        raise PhotoRejected("empty", "the file is empty (0 bytes); upload the photo again")
    if len(data) > rules.max_bytes:
        raise PhotoRejected(
            "too_large_bytes",
            f"the file is {size_text(len(data))}, over the {size_text(rules.max_bytes)} limit; "
            "send a smaller or more compressed copy",
        )


def _check_dimensions(width: int, height: int, rules: IntakeRules) -> None:
    if min(width, height) < rules.min_side_px:
        raise PhotoRejected(
            "too_small",
            f"the image is only {width}x{height} px; {rules.family} needs at least {rules.min_side_px} px "
            "on the shorter side, so send the full-size photo",
        )


def _find_face(pixels: np.ndarray, rules: IntakeRules) -> FoundFace:
    """The one dominant face, or a rejection."""
    faces = find_faces(pixels, min_size=max(CASCADE_WINDOW_PX, rules.min_face_px // 2))
    if not faces:
        judge_image_exposure(to_gray(pixels), rules)
        raise PhotoRejected(
            "no_face",
            f"no face found; use a photo where your face is clearly visible and at least {rules.min_face_px} px wide",
        )
    largest = faces[0].box
    similar = [face for face in faces[1:] if face.box.area >= rules.similar_face_ratio * largest.area]
    if similar:
        raise PhotoRejected(
            "several_faces",
            f"{1 + len(similar)} faces of similar size found; use a photo of only you, or crop the others out",
        )
    return faces[0]


def _check_crop_size(face: FaceBox, plan: CropPlan, rules: IntakeRules) -> None:
    """A face is big enough when its head-and-shoulders crop needs at most max_upscale enlargement."""
    if plan.side >= rules.min_crop_px:
        return
    limited = " (the photo is not larger)" if plan.side < natural_side(face, rules) else ""
    raise PhotoRejected(
        "face_too_small",
        f"your face is too small ({face.w} px wide): the head-and-shoulders crop around it is {plan.side} px"
        f"{limited}, and {rules.family} trains at {rules.resolution} px; a crop may be enlarged at most "
        f"{rules.max_upscale:g}x, so it needs at least {rules.min_crop_px} px (a face about {rules.min_face_px} px "
        "wide); move closer or use a higher-resolution photo",
    )


def _identity(pixels: np.ndarray, face: FoundFace) -> FaceIdentity | None:
    try:
        return face_identity(pixels, face)
    except FaceModelsMissing as missing:  # crops stay unlevelled and photos unchecked, but intake goes on
        log.warning("%s", missing)
        return None


def _judge_quality(pixels: np.ndarray, region: FaceBox, rules: IntakeRules) -> list[str]:
    gray = face_gray(pixels, region)
    return judge_face_exposure(gray, rules) + judge_sharpness(gray, rules)


def _check_known_duplicate(phash: str, known_phashes: Sequence[str], rules: IntakeRules) -> None:
    if any(is_near_duplicate(phash, known, rules.duplicate_distance) for known in known_phashes):
        raise PhotoRejected(
            "duplicate", "this looks the same as a photo this subject already has; use a different photo"
        )


def _prepare(
    decoded: DecodedPhoto, rules: IntakeRules, known_phashes: Sequence[str]
) -> tuple[PreparedPhoto, list[str]]:
    pixels = decoded.pixels
    height, width = pixels.shape[:2]
    _check_dimensions(width, height, rules)
    found = _find_face(pixels, rules) if rules.require_face else None
    face = found.box if found else None
    identity = _identity(pixels, found) if found else None
    plan = plan_crop(face, identity.landmarks if identity else None, width, height, rules)
    if face is not None:
        _check_crop_size(face, plan, rules)
    warnings = _judge_quality(pixels, face or plan.box, rules)
    phash = perceptual_hash(pixels)
    _check_known_duplicate(phash, known_phashes, rules)
    if plan.side < rules.resolution * UPSCALE_WARN_RATIO:
        warnings.append(
            f"the part of the photo used for training is only {plan.side} px, so it is enlarged to "
            f"{rules.resolution} px; a closer or higher-resolution photo trains better"
        )
    original, ext = encode_original(decoded)
    prepared = PreparedPhoto(
        original=original,
        original_ext=ext,
        crop=render_crop(decoded.image, plan, rules.resolution),
        sha256=hashlib.sha256(original).hexdigest(),
        phash=phash,
        face_box=(face or plan.box).as_tuple(),
        width=width,
        height=height,
        embedding=descriptor_bytes(identity.descriptor) if identity else None,
    )
    return prepared, warnings


def _rejected(index: int, name: str, code: str, reason: str) -> PhotoResult:
    message = f"{photo_label(index, name)}: {reason}"
    return PhotoResult(PhotoVerdict(index, name, False, code, message), None)


def inspect_photo(
    data: bytes, filename: str, index: int, rules: IntakeRules, known_phashes: Sequence[str] = ()
) -> PhotoResult:
    """Check one upload. Never raises for any bytes: every failure is a rejected verdict with `prepared=None`."""
    name = display_filename(filename)
    label = photo_label(index, name)
    try:
        data = bytes(data)
        _check_bytes(data, rules)
        decoded = decode_photo(data, rules.max_pixels)
        prepared, warnings = _prepare(decoded, rules, tuple(known_phashes or ()))
    except PhotoRejected as rejection:
        return _rejected(index, name, rejection.code, rejection.reason)
    except MemoryError:
        return _rejected(index, name, "too_many_pixels", "the image is too large to process; send a resized copy")
    except Exception:
        log.exception("intake failed unexpectedly for %s", label)
        return _rejected(
            index, name, "internal_error", "this photo could not be processed; try again or send it as a JPEG"
        )
    summary = f"accepted (face {prepared.face_box[2]} px wide)" if rules.require_face else "accepted"
    verdict = PhotoVerdict(
        index, name, True, "ok", f"{label}: {summary}", tuple(f"{label}: {warning}" for warning in warnings)
    )
    return PhotoResult(verdict, prepared)


def _batch_duplicate(result: PhotoResult, earlier: list[PhotoResult], rules: IntakeRules) -> PhotoResult:
    for other in earlier:
        if is_near_duplicate(result.prepared.phash, other.prepared.phash, rules.duplicate_distance):
            first = other.verdict
            return _rejected(
                result.verdict.index, result.verdict.filename, "duplicate",
                f"this looks the same as {photo_label(first.index, first.filename)}; use a different photo",
            )
    return result


def _different_people(accepted: list[PhotoResult], known_embeddings: Sequence[bytes]) -> dict[int, PhotoResult]:
    """Rejections, by upload number, for accepted photos that clearly show someone else than the rest."""
    new = [(r.verdict.index, descriptor_from_bytes(r.prepared.embedding)) for r in accepted if r.prepared.embedding]
    new = [(number, vector) for number, vector in new if vector is not None]
    stored = [vector for vector in map(descriptor_from_bytes, known_embeddings) if vector is not None]
    by_number = {r.verdict.index: r for r in accepted}
    return {
        odd.number: _rejected(odd.number, by_number[odd.number].verdict.filename, "different_person",
                              odd_photo_reason(odd))
        for odd in odd_photos(new, stored)
    }


def inspect_batch(
    files: Sequence[tuple[str, bytes]], rules: IntakeRules, known_phashes: Sequence[str] = (),
    known_embeddings: Sequence[bytes] = (),
) -> list[PhotoResult]:
    """Check uploads in order (numbered from 1). A photo that repeats an earlier accepted one in the same batch,
    or one the subject already has, is rejected as a duplicate; one that clearly shows a different person from
    the others (with the subject's stored photos, `known_embeddings`) is rejected as `different_person`."""
    results: list[PhotoResult] = []
    accepted: list[PhotoResult] = []
    for position, (filename, data) in enumerate(files, start=1):
        result = inspect_photo(data, filename, position, rules, known_phashes)
        if result.prepared is not None:
            result = _batch_duplicate(result, accepted, rules)
        if result.prepared is not None:
            accepted.append(result)
        results.append(result)
    rejected = _different_people(accepted, known_embeddings)
    return [rejected.get(result.verdict.index, result) for result in results]
