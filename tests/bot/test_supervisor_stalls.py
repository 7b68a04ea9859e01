"""The supervisor notices a hung worker (its job's lease runs out), kills it and requeues the job as "stalled,
restarting"; it waits for a worker started by hand instead of restarting its own forever; the worker runs under
`nice` from the command line, never through preexec_fn.

The worker here is a stand-in process that takes jobs through the real queue calls, so each test decides how it
behaves; bench.faults' hung_worker stops the real worker with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from bot import render, supervisor as supervisor_module
from bot.services.jobs import job_view
from bot.supervisor import WorkerSupervisor
from storage import jobs
from storage.db import AsyncDatabase, connect
from storage.files import FileStore
from storage.locks import worker_lock
from storage.settings import Settings

LEASE_S = 1.0
# Takes the next job, renews its lease a few times, then hangs (no more beats) when told to; else finishes it.
STAND_IN = """
import sys, time
from storage import jobs
from storage.db import connect
db, owner, hang = sys.argv[1], sys.argv[2], sys.argv[3] == "hang"
conn = connect(db)
while (job := jobs.claim_next_job(conn, owner, {lease})) is None:
    time.sleep(0.05)
for step in range(3):
    jobs.heartbeat(conn, job.id, owner, {lease}, step=step + 1, total=10, eta_at=time.time() + 600)
    time.sleep(0.2)
if hang:
    time.sleep(3600)
jobs.finish_job(conn, job.id, owner, "succeeded", result={{}})
time.sleep(3600)
""".format(lease=LEASE_S)


class StandInSupervisor(WorkerSupervisor):
    """The real supervisor, starting the stand-in: hung the first time, healthy after."""

    def _command(self, owner: str) -> list[str]:
        mode = "hang" if self.state.starts == 1 else "finish"
        return [sys.executable, "-c", STAND_IN, str(self.settings.database_path), owner, mode]


async def _until(predicate, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := await predicate():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
async def queued(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", worker_lease_s=LEASE_S, worker_nice=0)
    conn = connect(settings.database_path)
    job_id = jobs.enqueue_job(conn, "train", {}, user_id=None)
    conn.close()
    db = await AsyncDatabase.open(settings.database_path)
    yield settings, db, job_id
    await db.close()


async def test_a_hung_worker_is_killed_its_job_requeued_as_stalled_and_resumed_by_a_new_one(queued):
    settings, db, job_id = queued
    supervisor = StandInSupervisor(settings, db, min_backoff_s=3.0)  # a window to look at the requeued job
    supervisor.start()
    try:
        first = await _until(lambda: _owner_running(db, job_id))
        hung_at = time.monotonic()
        await _until(lambda: _value(supervisor.state.stalls >= 1), 10 * LEASE_S)
        assert supervisor.state.last_stall_at - hung_at <= 2 * LEASE_S + 0.6  # its beats stopped ~0.6 s in
        job = await _until(lambda: _queued(db, job_id))  # after the kill, before the new worker's claim
        assert job.message == jobs.STALLED_MESSAGE and job.eta_at is None and job.step == 3
        done = await _until(lambda: _finished(db, job_id))
        assert done.state == "succeeded" and done.owner != first and done.attempts == 2
        assert supervisor.state.starts == 2
    finally:
        await supervisor.stop()


async def test_status_shows_a_stalled_job_without_its_eta(queued, tmp_path):
    settings, db, job_id = queued
    conn = connect(settings.database_path)
    try:
        jobs.claim_next_job(conn, "gone", 600)
        jobs.heartbeat(conn, job_id, "gone", -1, step=3, total=10, eta_at=time.time() + 120)  # lease ran out
        line = render.jobs_view([job_view(conn, FileStore(tmp_path / "store"), jobs.get_job(conn, job_id))])
        assert "stalled, restarting" in line and "done " not in line
        jobs.requeue_owner(conn, "gone", jobs.STALLED_MESSAGE)
        line = render.jobs_view([job_view(conn, FileStore(tmp_path / "store"), jobs.get_job(conn, job_id))])
        assert "queued" in line and "stalled, restarting" in line
    finally:
        conn.close()


async def test_a_lease_that_runs_out_on_a_full_disk_does_not_kill_the_worker(queued, monkeypatch):
    settings, db, job_id = queued
    monkeypatch.setattr(supervisor_module, "free_bytes", lambda path: 0)  # nothing can be written, beats neither
    supervisor = StandInSupervisor(settings, db, min_backoff_s=0.5)
    supervisor.start()
    try:
        await _until(lambda: _owner_running(db, job_id))
        await asyncio.sleep(5 * LEASE_S)
        assert supervisor.state.stalls == 0 and supervisor.state.starts == 1 and supervisor.running
    finally:
        await supervisor.stop()


async def test_a_worker_started_by_hand_is_waited_for_not_raced(queued, caplog, monkeypatch):
    settings, db, job_id = queued
    monkeypatch.setattr(supervisor_module, "LOCK_POLL_S", 0.1)
    by_hand = worker_lock(settings.data_dir)
    assert by_hand.acquire("worker")
    supervisor = StandInSupervisor(settings, db, min_backoff_s=0.1)
    supervisor.start()
    try:
        await _until(lambda: _value(supervisor.state.waiting_for_lock))
        await asyncio.sleep(1.0)
        assert supervisor.state.starts == 0  # no worker started to exit at once, again and again
        assert caplog.text.count("starts when it stops") == 1
        by_hand.release()
        await _until(lambda: _value(supervisor.state.starts == 1))
    finally:
        by_hand.release()
        await supervisor.stop()


def test_the_worker_is_niced_on_the_command_line_not_in_preexec_fn(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path, worker_nice=10)
    command = WorkerSupervisor(settings, db=None)._command("w-1")
    assert command[1:3] == ["-n", "10"] and command[0].endswith("nice") and command[3:5] == [sys.executable, "-m"]
    assert WorkerSupervisor(settings.model_copy(update={"worker_nice": 0}), db=None)._command("w-1")[0] == \
        sys.executable


async def _value(value):
    return value


async def _owner_running(db, job_id):
    job = await db.run(jobs.get_job, job_id)
    return job.owner if job.state == "running" else None


async def _finished(db, job_id):
    job = await db.run(jobs.get_job, job_id)
    return job if job.finished else None


async def _queued(db, job_id):
    job = await db.run(jobs.get_job, job_id)
    return job if job.state == "queued" else None
