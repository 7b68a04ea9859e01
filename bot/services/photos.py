"""/photos list|add|remove|caption for the requester's own subjects."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from bot.services.context import ServiceContext
from bot.services.errors import ServiceError
from bot.services.photo_intake import (
    CheckedPhoto,
    check_batch_size,
    inspect_uploads,
    look_alike_notes,
    remove_files,
    store_checked_photos,
    stored_embeddings,
)
from bot.services.subject_access import active_training_job, ensure_requester, own_subject, own_subject_by_id
from bot.services.training_outcome import subject_ref
from bot.services.types import PhotoInfo, Requester, TrainOutcome, Upload
from bot.services.verbs import slash
from storage import photos
from storage.db import transaction
from storage.files import FileStore
from storage.photos import Photo
from storage.subjects import Subject
from intake.captions import sanitise_caption


def _photo_info(store: FileStore, number: int, photo: Photo) -> PhotoInfo:
    return PhotoInfo(
        number=number, photo_id=photo.id, original_name=photo.original_name, caption=photo.caption,
        width=photo.width, height=photo.height, size_bytes=photo.size_bytes,
        crop_path=store.resolve(photo.crop_path) if photo.crop_path else None, created_at=photo.created_at,
    )


def _numbered(conn: sqlite3.Connection, subject: Subject, number: object) -> tuple[int, Photo]:
    accepted = photos.accepted_photos(conn, subject.id)
    if not accepted:
        raise ServiceError("no_photos", f"`{subject.trigger}` has no photos yet; add some with /photos add.")
    if isinstance(number, str) and number.strip().isascii() and number.strip().isdigit():
        number = int(number.strip())  # the console passes text
    valid = isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= len(accepted)
    if not valid:
        raise ServiceError(
            "bad_photo_number",
            f"`{subject.trigger}` has photos 1 to {len(accepted)}; /photos list shows their numbers.",
        )
    return number, accepted[number - 1]


class PhotoService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def list(self, req: Requester, trigger: str) -> list[PhotoInfo]:
        return await self.ctx.db.run(self._list, req, trigger)

    async def add(self, req: Requester, trigger: str, uploads: Sequence[Upload]) -> TrainOutcome:
        uploads = tuple(uploads or ())
        subject, before, known, faces = await self.ctx.db.run(self._subject_state, req, trigger)
        if not uploads:
            raise ServiceError("no_photos", f"Attach the photos of `{subject.trigger}` to add.")
        check_batch_size(self.ctx.settings, uploads, before, subject.trigger)
        checked = await inspect_uploads(self.ctx.settings, uploads, subject.trigger, subject.class_noun, known, faces)
        return await self.ctx.db.run(self._store, req, subject.id, checked)

    async def remove(self, req: Requester, trigger: str, number: int) -> PhotoInfo:
        info, keys = await self.ctx.db.run(self._remove, req, trigger, number)
        remove_files(self.ctx.store, keys)
        return info

    async def caption(self, req: Requester, trigger: str, number: int, text: str | None) -> PhotoInfo:
        return await self.ctx.db.run(self._caption, req, trigger, number, text)

    # Database-thread steps.
    def _list(self, conn: sqlite3.Connection, req: Requester, trigger: str) -> list[PhotoInfo]:
        subject = own_subject(conn, req.user_id, trigger)
        return [_photo_info(self.ctx.store, n, p) for n, p in enumerate(photos.accepted_photos(conn, subject.id), 1)]

    def _subject_state(
        self, conn: sqlite3.Connection, req: Requester, trigger: str
    ) -> tuple[Subject, int, list[str], list[bytes]]:
        ensure_requester(conn, req)
        subject = own_subject(conn, req.user_id, trigger)
        return (subject, photos.count_accepted(conn, subject.id), photos.known_phashes(conn, subject.id),
                stored_embeddings(conn, subject.id))

    def _store(self, conn: sqlite3.Connection, req: Requester, subject_id: int, checked: Sequence[CheckedPhoto]) -> TrainOutcome:
        created: list[str] = []
        try:
            with transaction(conn):
                ensure_requester(conn, req)
                subject = own_subject_by_id(conn, req.user_id, subject_id)
                store_checked_photos(conn, self.ctx.store, subject, checked, created)
                total = photos.count_accepted(conn, subject.id)
                look_alikes = look_alike_notes(conn, subject)
        except BaseException:
            remove_files(self.ctx.store, created)
            raise
        minimum = self.ctx.settings.min_photos_per_subject
        added = sum(1 for item in checked if item.prepared is not None)
        notes = [f"Added {added} photo{'s' if added != 1 else ''}; `{subject.trigger}` now has {total}."]
        if total >= minimum and added:
            notes.append(f"Run `{slash('retrain', subject=subject.trigger)}` to train with the new photos.")
        elif total < minimum:
            notes.append(f"Training needs at least {minimum}; add {minimum - total} more.")
        notes += look_alikes
        return TrainOutcome(
            subjects=(subject_ref(subject),), verdicts=tuple(item.verdict for item in checked), photos_total=total,
            needs_more=max(0, minimum - total), notes=tuple(notes),
        )

    def _remove(self, conn: sqlite3.Connection, req: Requester, trigger: str, number: int) -> tuple[PhotoInfo, list[str]]:
        with transaction(conn):
            subject = own_subject(conn, req.user_id, trigger)
            if active_training_job(conn, subject) is not None:
                raise ServiceError(
                    "subject_training",
                    f"`{subject.trigger}` is training right now; remove photos after its job finishes or is cancelled.",
                )
            number, photo = _numbered(conn, subject, number)
            photos.delete_photo(conn, photo.id)
        keys = [key for key in (photo.original_path, photo.crop_path) if key]
        return _photo_info(self.ctx.store, number, photo), keys

    def _caption(self, conn: sqlite3.Connection, req: Requester, trigger: str, number: int, text: str | None) -> PhotoInfo:
        subject = own_subject(conn, req.user_id, trigger)
        number, photo = _numbered(conn, subject, number)
        verdict = sanitise_caption(text, subject.trigger, subject.class_noun)
        if not verdict.ok:
            raise ServiceError("bad_caption", f"Photo {number}: {verdict.message}.")
        photos.set_caption(conn, photo.id, verdict.caption)
        return _photo_info(self.ctx.store, number, photos.get_photo(conn, photo.id))

