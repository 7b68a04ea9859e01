"""The supervisor keeps the worker process alive: kill -9 it mid-training and the job still finishes."""

import asyncio
import os
import signal
import time

import pytest

from storage import jobs
from storage.db import AsyncDatabase
from bot.supervisor import WorkerSupervisor
from tests.trainer.job_fixtures import add_subject, make_world


async def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def _supervised_training(tmp_path, overrides: dict, stop_timeout_s: float):
    """A queued tiny training job and a started supervisor: (job id, database, supervisor)."""
    world = make_world(tmp_path, worker_lease_s=30.0)  # long lease: recovery must not wait for it
    subject = add_subject(world, 1, "rraj")
    payload = {"subject_ids": [subject.id], "family": "tiny-sd15", "base_model": "tiny-sd15",
               "overrides": {"num_class_images": 2, "preview_every": 0, **overrides}}
    job_id = jobs.enqueue_job(world.conn, "train", payload, user_id=1)
    db = await AsyncDatabase.open(world.settings.database_path)
    supervisor = WorkerSupervisor(world.settings, db, min_backoff_s=0.2, stop_timeout_s=stop_timeout_s)
    supervisor.start()
    return job_id, db, supervisor


@pytest.mark.slow
async def test_a_killed_worker_is_restarted_and_the_job_resumes(tmp_path):
    job_id, db, supervisor = await _supervised_training(tmp_path, {"steps": 8, "checkpoint_every": 2}, 60)
    try:
        async def at_step_four():
            job = await db.run(jobs.get_job, job_id)
            return job.step >= 4 and job.state == "running"

        await _wait(at_step_four, 600, "training to reach step 4")
        first_pid = supervisor.state.pid
        os.kill(first_pid, signal.SIGKILL)

        async def finished():
            job = await db.run(jobs.get_job, job_id)
            return job if job.finished else None

        job = await _wait(finished, 600, "the job to finish after the restart")
        assert job.state == "succeeded", job.error
        assert job.attempts == 2
        assert supervisor.state.starts >= 2 and supervisor.state.pid != first_pid
        assert supervisor.state.last_exit_code == -signal.SIGKILL
    finally:
        await supervisor.stop()
        await db.close()


@pytest.mark.slow
async def test_stop_sends_sigterm_and_the_worker_releases_its_job(tmp_path):
    job_id, db, supervisor = await _supervised_training(tmp_path, {"steps": 400, "checkpoint_every": 0}, 120)
    try:
        async def training():
            job = await db.run(jobs.get_job, job_id)
            return job.step >= 2

        await _wait(training, 600, "training to start")
        await supervisor.stop()
        job = await db.run(jobs.get_job, job_id)
        assert job.state == "queued" and job.attempts == 0  # released, not failed
        assert "resume" in job.message
        assert supervisor.state.last_exit_code == 0
    finally:
        await supervisor.stop()
        await db.close()
