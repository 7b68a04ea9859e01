"""Checking uploads (in a thread, so Discord is never blocked) and storing the accepted ones.

Accepted photos: the EXIF-free original and the crop go to the file store, then a row. Rejected photos: a row with
the verdict sentence and no file. The rows are written in the caller's transaction; if it fails, only the files
this call created are removed, never one that was already there.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from bot.services.errors import ServiceError
from bot.services.types import Upload
from storage import photos, subjects
from storage.files import FileStore, photo_crop_key, photo_original_key
from storage.settings import Settings
from storage.subjects import Subject
from intake.captions import sanitise_caption
from intake.formats import size_text
from intake.face_landmarks import DESCRIPTOR_MODEL
from intake.identity import LOOK_ALIKE_DISTANCE, descriptor_from_bytes, look_alike
from intake.photos import IntakeRules, PhotoVerdict, PreparedPhoto, inspect_batch, photo_label
from intake.triggers import needs_face


@dataclass(frozen=True)
class CheckedPhoto:
    verdict: PhotoVerdict
    prepared: PreparedPhoto | None  # None when rejected
    caption: str  # the sanitised caption (or the template)


def check_batch_size(settings: Settings, uploads: Sequence[Upload], photos_already: int, trigger: str) -> None:
    """Refuse a batch that can never fit before spending time on it."""
    room = settings.max_photos_per_subject - photos_already
    if len(uploads) > room:
        if room <= 0:
            raise ServiceError(
                "too_many_photos",
                f"`{trigger}` already has {photos_already} photos, the most a subject can have "
                f"({settings.max_photos_per_subject}); remove some with /photos remove first.",
            )
        raise ServiceError(
            "too_many_photos",
            f"You sent {len(uploads)} photos, but `{trigger}` has room for only {room} more "
            f"(the limit is {settings.max_photos_per_subject}).",
        )
    total = sum(len(upload.data) for upload in uploads)
    limit = settings.max_upload_bytes * settings.max_photos_per_subject  # one file too big gets its own verdict
    if total > limit:
        raise ServiceError(
            "upload_too_large",
            f"These photos add up to {size_text(total)}, over the {size_text(limit)} limit; send smaller copies.",
        )


def _caption_rejection(verdict: PhotoVerdict, message: str) -> PhotoVerdict:
    label = photo_label(verdict.index, verdict.filename)
    return PhotoVerdict(verdict.index, verdict.filename, False, "bad_caption", f"{label}: {message}")


def _inspect(
    uploads: Sequence[Upload], rules: IntakeRules, trigger: str, class_noun: str, known: Sequence[str],
    known_embeddings: Sequence[bytes],
) -> list[CheckedPhoto]:
    files = [(upload.filename, bytes(upload.data)) for upload in uploads]
    results = inspect_batch(files, rules, known, known_embeddings)
    checked = []
    for upload, result in zip(uploads, results, strict=True):
        caption = sanitise_caption(upload.caption, trigger, class_noun)
        if result.prepared is not None and not caption.ok:
            checked.append(CheckedPhoto(_caption_rejection(result.verdict, caption.message), None, caption.caption))
        else:
            checked.append(CheckedPhoto(result.verdict, result.prepared, caption.caption))
    return checked


async def inspect_uploads(
    settings: Settings, uploads: Sequence[Upload], trigger: str, class_noun: str, known_phashes: Sequence[str],
    known_embeddings: Sequence[bytes] = (),
) -> list[CheckedPhoto]:
    """A verdict per upload, in order. CPU-heavy, so it runs in a worker thread. `known_embeddings` are the
    subject's stored face descriptors (stored_embeddings), so a photo of someone else is caught."""
    rules = IntakeRules.for_family(
        settings.model_family, max_bytes=settings.max_upload_bytes, require_face=needs_face(class_noun)
    )
    return await asyncio.to_thread(
        _inspect, list(uploads), rules, trigger, class_noun, list(known_phashes), list(known_embeddings)
    )


def stored_embeddings(conn: sqlite3.Connection, subject_id: int | None) -> list[bytes]:
    """The subject's stored face descriptors (none for a subject not created yet)."""
    return photos.subject_embeddings(conn, subject_id, DESCRIPTOR_MODEL) if subject_id is not None else []


def look_alike_notes(conn: sqlite3.Connection, subject: Subject) -> list[str]:
    """Warnings for family members whose photos look like the same person as this subject's."""
    if subject.group_id is None:
        return []
    by_subject = photos.group_embeddings(conn, subject.group_id, DESCRIPTOR_MODEL)
    decoded = {sid: [v for v in map(descriptor_from_bytes, blobs) if v is not None] for sid, blobs in by_subject.items()}
    notes = []
    for other_id, vectors in decoded.items():
        distance = look_alike(decoded.get(subject.id, []), vectors) if other_id != subject.id else None
        other = subjects.get_subject(conn, other_id) if distance is not None else None
        if other is not None:
            notes.append(
                f"`{subject.trigger}` and `{other.trigger}` look like the same person (face distance {distance:.2f}, "
                f"under {LOOK_ALIKE_DISTANCE}); check that each one's photos show the right person."
            )
    return notes


DISK_FULL = ("The server's disk is full, so these photos were not saved (nothing stored earlier was changed); "
             "please tell the bot's host.")


def _write_new(store: FileStore, key: str, data: bytes, created: list[str]) -> None:
    if store.exists(key):
        return  # the same content is already stored (and may belong to another row): never touch it
    try:
        store.write_bytes(key, data)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise ServiceError("disk_full", DISK_FULL) from None
        raise
    created.append(key)


def store_checked_photos(
    conn: sqlite3.Connection, store: FileStore, subject: Subject, checked: Sequence[CheckedPhoto], created: list[str]
) -> None:
    """Write files and rows for one batch (inside the caller's transaction). `created` collects the new files so
    the caller can remove them if the transaction fails."""
    for item in checked:
        prepared = item.prepared
        if prepared is None:
            photos.add_rejected_photo(conn, subject.id, item.verdict.filename, item.verdict.message)
            continue
        original_key = photo_original_key(subject.owner_id, subject.id, prepared.sha256, prepared.original_ext)
        crop_key = photo_crop_key(subject.owner_id, subject.id, prepared.sha256)
        _write_new(store, original_key, prepared.original, created)
        _write_new(store, crop_key, prepared.crop, created)
        photo = photos.add_accepted_photo(
            conn, subject.id, original_name=item.verdict.filename, sha256=prepared.sha256, phash=prepared.phash,
            original_path=original_key, crop_path=crop_key, size_bytes=len(prepared.original),
            width=prepared.width, height=prepared.height, face_box=prepared.face_box, caption=item.caption,
        )
        if prepared.embedding is not None:
            photos.add_embedding(conn, photo.id, prepared.embedding_model, prepared.embedding)


def remove_files(store: FileStore, keys: Sequence[str]) -> None:
    for key in keys:
        store.delete(key)
