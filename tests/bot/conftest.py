"""SimCord fixtures: the real bot (create_bot) on an in-memory Discord, with a fresh data directory per test.

No worker runs on its own here. Most tests play the worker's side of the jobs table step by step with
`tests.bot.queue_driver.QueueDriver`; the `end_to_end` ones run the real worker in-process (`await run_worker(...)`).
Either way a test then advances SimCord's clock (`env.advance_time`) so the job watcher reports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from bot.app import create_bot
from bot.delivery import RetryPolicy
from bot.services import Services
from storage.db import AsyncDatabase
from storage.files import FileStore
from storage.settings import Settings

GUILD_ID = 410_000_000_000_000_001
FAST_RETRIES = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05)


def make_settings(tmp_path, **overrides) -> Settings:
    values = dict(
        data_dir=tmp_path / "data", allowed_guild_ids=[GUILD_ID], train_steps=4, generation_cooldown_s=0.0,
        progress_edit_interval_s=5.0, worker_poll_s=0.05, worker_lease_s=30.0,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def bot_settings(tmp_path, request) -> Settings:
    marker = request.node.get_closest_marker("bot_settings")
    return make_settings(tmp_path, **(marker.kwargs if marker else {}))


@pytest.fixture
async def bot_services(bot_settings):
    db = await AsyncDatabase.open(bot_settings.database_path)
    services = Services.build(bot_settings, db, FileStore(bot_settings.store_dir))
    yield services
    await db.close()


def build_bot(settings, services):
    return create_bot(settings, services, retry_policy=FAST_RETRIES, measure_loop_lag=False)


@pytest.fixture
def simcord_bot(bot_settings, bot_services):
    return build_bot(bot_settings, bot_services)


@dataclass
class World:
    env: object
    guild: object
    channel: object
    alice: object
    bob: object


@pytest.fixture
def world(simcord_env):
    guild = simcord_env.create_guild("Family", id=GUILD_ID)
    channel = guild.create_text_channel("likeness")
    alice = guild.add_member(simcord_env.create_user("alice"))
    bob = guild.add_member(simcord_env.create_user("bob"))
    yield World(simcord_env, guild, channel, alice, bob)
    assert_every_interaction_answered(simcord_env)


def assert_every_interaction_answered(env) -> None:
    """Discord's rule: every interaction is acknowledged (within 3 s; SimCord settles each one before returning)."""
    silent = [(i.id, i.command_name, i.type) for i in env.backend.interactions.values() if not i.responded]
    assert not silent, f"interactions never acknowledged: {silent}"


# Helpers shared by the test modules.
async def run_worker(settings: Settings, handlers=None) -> int:
    """Run the real worker loop in a thread until the queue is empty (the bot's event loop stays free).
    Without `handlers`, the worker is wired as `python -m trainer` wires it."""
    from trainer.__main__ import build_worker
    from trainer.worker import Worker

    def run() -> int:
        if handlers is None:
            worker = build_worker(settings, owner="test-worker")
        else:
            worker = Worker(settings, handlers, owner="test-worker")
        try:
            return worker.run(until_idle=True)
        finally:
            worker.close()

    return await asyncio.to_thread(run)


PHOTO_FIELD = "likeness:photos"
CAPTION_FIELD = "likeness:captions"


def two_faces() -> list[tuple[str, bytes]]:
    from tests.corpus import astronaut_jpeg, camera_jpeg

    return [("astronaut.jpg", astronaut_jpeg()), ("camera.jpg", camera_jpeg())]


async def start_training(world: World, actor, trigger: str = "rraj", photos=None, **options):
    """/train, then submit the upload form; returns the submit's InteractionResult."""
    if trigger is not None:
        options["trigger"] = trigger
    shown = await actor.slash(world.channel, "train", **options)
    assert shown.acknowledged and shown.modal is not None, shown
    return await actor.submit_modal(shown, {PHOTO_FIELD: photos or two_faces()})


def texts(result) -> str:
    """Everything an interaction answered, as one string."""
    parts = [result.response.content] if result.response is not None else []
    parts += [f.content for f in result.followups]
    return "\n".join(parts)


def requests_to(env, method: str, fragment: str) -> list:
    return [r for r in env.http_requests if r.method == method and fragment in r.path]


@pytest.fixture(scope="session")
def shared_model_dirs(tmp_path_factory):
    """Tiny models and class images built once per test session (the product shares the class-image cache too)."""
    return tmp_path_factory.mktemp("shared-models"), tmp_path_factory.mktemp("shared-cache")


def share_models(settings: Settings, shared) -> None:
    """Point this test's data dir at the session's tiny models and class-image cache."""
    models, cache = shared
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for link, target in ((settings.models_dir, models), (settings.cache_dir, cache)):
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
