"""The deletion guarantee end to end: /forget while the user's training job runs cancels it, and afterwards
nothing of the user remains: no row, no file, no export, no adapter cached in the worker."""

import asyncio
import threading
import time

import pytest

from bot.services import ImagineOptions, Upload
from bot.services.training import TrainRequest
from storage import jobs
from storage.forget import sweep_forgotten
from tests.bot.services.conftest import requester
from tests.corpus import astronaut_jpeg, camera_jpeg
from trainer.__main__ import build_worker

ALICE, BOB = 700000000000000001, 700000000000000002


def _mentions(conn, user_id: int, words: list[str]) -> list[str]:
    found = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        for row in conn.execute(f"SELECT * FROM {table}").fetchall():
            for key in row.keys():
                value = row[key]
                if value == user_id or (isinstance(value, str) and (str(user_id) in value
                                                                     or any(w in value for w in words))):
                    found.append(f"{table}.{key}")
    return found


async def _until(predicate, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.slow
async def test_forget_during_training_leaves_nothing_anywhere(build_services):
    services = await build_services(train_steps=4, worker_lease_s=10.0)
    photos = [Upload("me.jpg", astronaut_jpeg()), Upload("me2.jpg", camera_jpeg())]
    first = await services.training.start(requester(ALICE), TrainRequest(trigger="rraj", display_name="Raj",
                                                                                 uploads=tuple(photos)))
    worker = build_worker(services.settings, owner="worker")
    await asyncio.to_thread(worker.run, until_idle=True)
    assert (await services.db.run(jobs.get_job, first.job_id)).state == "succeeded"

    # Alice exports and shares; Bob makes a picture of her, so her adapter sits in the worker's cache.
    export = await services.account.export(requester(ALICE), "rraj")
    await services.sharing.share(requester(ALICE), "rraj", user_id=BOB)
    bob_picture = await services.imagine.imagine(requester(BOB), ImagineOptions(prompt="rraj person at the beach"))
    await asyncio.to_thread(worker.run, until_idle=True)
    assert (await services.db.run(jobs.get_job, bob_picture.job_id)).state == "succeeded"
    server = worker.resources["generation_server"]
    assert server.cached_adapter_ids()

    # Alice retrains with many steps; she asks to be forgotten while it runs.
    retrain = await services.training.start(requester(ALICE), TrainRequest(subject="rraj"))
    await services.db.run(lambda c: c.execute(
        "UPDATE jobs SET payload = json_set(payload, '$.overrides.steps', 400) WHERE id = ?", (retrain.job_id,)))
    running = threading.Thread(target=worker.run, daemon=True)
    running.start()
    try:
        async def training_started():
            job = await services.db.run(jobs.get_job, retrain.job_id)
            return job.state == "running" and job.step >= 2

        await _until(training_started)
        outcome = await services.account.forget(requester(ALICE))
        assert outcome.finishing and outcome.adapters == 1 and outcome.photos == 2

        async def cancelled():
            return (await services.db.run(jobs.get_job, retrain.job_id)).state == "cancelled"

        await _until(cancelled)  # honoured within a training step
        assert await services.db.run(sweep_forgotten, services.store) == [ALICE]
        worker._last_idle_run = 0  # the idle housekeeping runs now rather than in a few seconds

        async def evicted():
            return not server.cached_adapter_ids()

        await _until(evicted, timeout=60)
    finally:
        worker.request_stop()
        await asyncio.to_thread(running.join, 60)

    assert await services.db.run(_mentions, ALICE, ["rraj"]) == []
    assert not [f for f in services.store.list_files() if f.startswith(f"users/{ALICE}")]
    assert not export.path.exists()
    assert not [f for f in services.store.list_files() if "generations" in f]  # Bob's picture of her too
