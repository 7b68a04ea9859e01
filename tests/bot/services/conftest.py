"""Real storage on tmp_path, real intake, the real services: nothing of ours is mocked."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from bot.services import Requester, ServiceError, Services
from storage.adapters import Adapter, record_adapter, set_adapter_metrics
from storage.db import AsyncDatabase
from storage.files import FileStore, adapter_root
from storage.photos import add_accepted_photo
from storage.settings import Settings
from storage.subjects import Subject, create_subject, ensure_user
from intake.triggers import trigger_skeleton

GUILD = 7001
CHANNEL = 9001
ADMIN = 42


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def requester(user_id: int, guild_id: int | None = GUILD, name: str | None = None) -> Requester:
    return Requester(user_id=user_id, display_name=name or f"User{user_id}", guild_id=guild_id, channel_id=CHANNEL)


async def refused(coro) -> ServiceError:
    """The ServiceError a refused service call raises."""
    with pytest.raises(ServiceError) as error:
        await coro
    return error.value


def make_settings(tmp_path, **overrides) -> Settings:
    values = dict(
        data_dir=tmp_path / "data", model_family="tiny-sd15", min_photos_per_subject=2, generation_cooldown_s=0,
        max_queued_generations_per_user=50, admin_user_ids=[ADMIN], prompt_blocklist=["gore", "nude"],
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
async def build_services(tmp_path) -> Callable:
    opened: list[AsyncDatabase] = []

    async def build(**overrides) -> Services:
        settings = make_settings(tmp_path, **overrides)
        db = await AsyncDatabase.open(settings.database_path)
        opened.append(db)
        return Services.build(settings, db, FileStore(settings.store_dir), clock=overrides.get("clock", FakeClock()))

    yield build
    for db in opened:
        await db.close()


@pytest.fixture
async def services(build_services) -> Services:
    return await build_services()


# Direct storage helpers: arrange state the way the trainer and worker would leave it.
def add_subject(conn, owner_id: int, trigger: str, class_noun: str = "person", **extra) -> Subject:
    ensure_user(conn, owner_id, f"User{owner_id}")
    return create_subject(
        conn, owner_id=owner_id, trigger=trigger, trigger_key=trigger_skeleton(trigger), class_noun=class_noun,
        display_name=extra.pop("display_name", trigger.title()), family=extra.pop("family", "tiny-sd15"), **extra,
    )


def add_fake_photos(conn, subject: Subject, count: int) -> None:
    """Photo rows as intake would leave them (the files are not needed by the services under test)."""
    for n in range(count):
        sha = f"{subject.id:04x}{n:060x}"
        add_accepted_photo(
            conn, subject.id, original_name=f"p{n}.jpg", sha256=sha, phash=f"{n:016x}",
            original_path=f"users/{subject.owner_id}/subjects/{subject.id}/originals/{sha}.jpg",
            crop_path=f"users/{subject.owner_id}/subjects/{subject.id}/crops/{sha}.png",
            size_bytes=1000, width=64, height=64, face_box=(0, 0, 64, 64), caption="a photo",
        )


def lora_file_bytes() -> bytes:
    return save_safetensors({
        "unet.down.to_q.lora_A.weight": np.zeros((4, 8), dtype=np.float32),
        "unet.down.to_q.lora_B.weight": np.ones((8, 4), dtype=np.float32),
    })


ADAPTER_SEQ = iter(range(50_000, 10**9))


def give_adapter(
    conn, store: FileStore, subject: Subject, *, family: str = "tiny-sd15", metrics: dict | None = None
) -> Adapter:
    """What the trainer leaves: an adapter folder in the store and a row, with the evaluation's metrics."""
    folder = adapter_root(subject.owner_id, next(ADAPTER_SEQ))
    weights = store.write_bytes(f"{folder}/pytorch_lora_weights.safetensors", lora_file_bytes())
    store.write_bytes(f"{folder}/metadata.json", b'{"trigger": "%s"}' % subject.trigger.encode())
    store.write_bytes(f"{folder}/loss.png", b"\x89PNG fake plot")
    adapter = record_adapter(
        conn, owner_id=subject.owner_id, job_id=None, family=family, base_model=family, path=weights,
        sha256=store.sha256(weights), size_bytes=store.size(weights), params={"rank": 4, "steps": 30},
        subject_ids=[subject.id],
    )
    if metrics is not None:
        set_adapter_metrics(conn, adapter.id, metrics)
    return adapter
