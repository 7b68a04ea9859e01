"""Worker-side fixtures: a real settings object, database and store on tmp_path, and subjects whose photos went
through the real intake."""

from __future__ import annotations

from dataclasses import dataclass

from storage import files, photos, subjects
from storage.db import connect
from storage.files import FileStore
from storage.settings import Settings
from tests.corpus import astronaut_jpeg, camera_jpeg
from intake.captions import template_caption
from intake.photos import IntakeRules, inspect_batch
from intake.triggers import trigger_skeleton


@dataclass
class WorkerWorld:
    settings: Settings
    conn: object
    store: FileStore


def make_world(data_dir, **settings) -> WorkerWorld:
    config = Settings(data_dir=data_dir, worker_poll_s=0.05, **settings)
    return WorkerWorld(config, connect(config.database_path), FileStore(config.store_dir))


def add_subject(world: WorkerWorld, user_id: int, trigger: str, photo_bytes=None, class_noun: str = "person"):
    """A subject with accepted photos, stored exactly as the intake prepares them."""
    subjects.ensure_user(world.conn, user_id, f"user{user_id}")
    subject = subjects.create_subject(
        world.conn, owner_id=user_id, trigger=trigger, trigger_key=trigger_skeleton(trigger),
        class_noun=class_noun, display_name=trigger, family=world.settings.model_family,
    )
    uploads = photo_bytes or [("astronaut.jpg", astronaut_jpeg()), ("camera.jpg", camera_jpeg())]
    results = inspect_batch(uploads, IntakeRules.for_family(world.settings.model_family))
    for result in results:
        prepared = result.prepared
        assert prepared is not None, result.verdict.message
        original = files.photo_original_key(user_id, subject.id, prepared.sha256, prepared.original_ext)
        crop = files.photo_crop_key(user_id, subject.id, prepared.sha256)
        world.store.write_bytes(original, prepared.original)
        world.store.write_bytes(crop, prepared.crop)
        photos.add_accepted_photo(
            world.conn, subject.id, original_name=result.verdict.filename, sha256=prepared.sha256,
            phash=prepared.phash, original_path=original, crop_path=crop, size_bytes=len(prepared.original),
            width=prepared.width, height=prepared.height, face_box=prepared.face_box,
            caption=template_caption(trigger, class_noun),
        )
    return subject
