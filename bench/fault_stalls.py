"""bench.faults scenarios of a training worker under the real supervisor: killed with -9, and hung (SIGSTOP).

hung_worker: the worker is stopped mid-training and never resumed. The supervisor must notice that its lease ran
out, kill it, requeue the job as "stalled, restarting" (what /status shows instead of an ETA) and start a new
worker that resumes the job from its last checkpoint. hung_worker_detected_s: from the stop to the kill (goal:
within two leases).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from bench import fault_world as fw
from storage import jobs
from storage.db import AsyncDatabase, connect
from storage.files import FileStore

HUNG_LEASE_S = 6.0
TRAIN_TIMEOUT_S = 600.0


async def _until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return False


class SupervisedTraining:
    """A training job queued on a fresh data directory and the real WorkerSupervisor running it."""

    def __init__(self, root: Path, shared: Path, name: str, lease_s: float) -> None:
        self.settings = fw.settings_for(root / name / "data", shared, worker_lease_s=lease_s)
        self.conn = connect(self.settings.database_path)
        store = FileStore(self.settings.store_dir)
        self.job_id = fw.queue_training(self.conn, fw.add_subject(self.conn, store, 1, "rraj").id, 1, steps=400,
                                        checkpoint_every=5)

    async def __aenter__(self):
        from bot.supervisor import WorkerSupervisor

        self.db = await AsyncDatabase.open(self.settings.database_path)
        self.supervisor = WorkerSupervisor(self.settings, self.db, min_backoff_s=0.2, stop_timeout_s=120)
        self.supervisor.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.supervisor.stop()
        await self.db.close()
        self.conn.close()

    async def job(self) -> jobs.Job:
        return await self.db.run(jobs.get_job, self.job_id)

    async def training_past(self, step: int) -> bool:
        return await _until(lambda: self._past(step), TRAIN_TIMEOUT_S)

    async def _past(self, step: int) -> bool:
        job = await self.job()
        return job.state == "running" and job.step >= step

    async def resumed_by_another(self, first_owner: str | None, timeout_s: float = TRAIN_TIMEOUT_S) -> bool:
        async def resumed():
            job = await self.job()
            return job.state == "running" and job.owner not in (None, first_owner)
        return await _until(resumed, timeout_s)


async def _worker_killed(root: Path, shared: Path, tally: fw.Tally) -> None:
    async with SupervisedTraining(root, shared, "kill-worker", lease_s=30.0) as run:
        training = await run.training_past(6)
        recovered = False
        if training:
            first = run.supervisor.state.owner
            os.kill(run.supervisor.state.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            recovered = await run.resumed_by_another(first)
            tally.recovery_s["worker_kill9"] = round(time.monotonic() - killed_at, 2) if recovered else None
        tally.details["worker_kill9"] = {"resumed_by_a_new_worker": recovered}
        tally.check("worker_kill9", training, "training never reached step 6")
    tally.figures["stuck_jobs"] += fw.stuck_jobs(run.settings.database_path)


def worker_killed(root: Path, shared: Path, tally: fw.Tally) -> None:
    asyncio.run(_worker_killed(root, shared, tally))


async def _status_line(run: SupervisedTraining) -> str:
    """What /status shows the owner now (the service and the renderer the bot uses)."""
    from bot import render
    from bot.services.jobs import job_view

    store = FileStore(run.settings.store_dir)
    view = await run.db.run(lambda conn: job_view(conn, store, jobs.get_job(conn, run.job_id)))
    return render.jobs_view([view])


async def _hung_worker(root: Path, shared: Path, tally: fw.Tally) -> None:
    async with SupervisedTraining(root, shared, "hung-worker", lease_s=HUNG_LEASE_S) as run:
        training = await run.training_past(6)
        details: dict[str, object] = {"lease_s": HUNG_LEASE_S}
        if training:
            first, pid = run.supervisor.state.owner, run.supervisor.state.pid
            checkpoint_step = (await run.job()).step // 5 * 5
            os.kill(pid, signal.SIGSTOP)  # hung: alive, holding its lock and its job, doing nothing
            stopped_at = time.monotonic()
            detected = await _until(_stalls_at_least(run, 1), 4 * HUNG_LEASE_S)
            if detected:
                tally.figures["hung_worker_detected_s"] = round(run.supervisor.state.last_stall_at - stopped_at, 2)
            details["status_while_stalled"] = await _status_line(run)
            details["message_after_detection"] = (await run.job()).message
            resumed = detected and await run.resumed_by_another(first)
            if resumed:
                tally.recovery_s["hung_worker"] = round(time.monotonic() - stopped_at, 2)
            details.update(detected=detected, resumed_by_a_new_worker=resumed, checkpoint_step=checkpoint_step,
                           hung_process_gone=not fw.alive(pid))
            if fw.alive(pid):  # never detected: do not leave it stopped behind
                tally.figures["orphan_workers"] += 1
                os.kill(pid, signal.SIGKILL)
            shown = str(details["status_while_stalled"])
            details["eta_shown_while_stalled"] = "done " in shown and "stalled" not in shown
        tally.details["hung_worker"] = details
        tally.check("hung_worker", training, "training never reached step 6")
    tally.figures["stuck_jobs"] += fw.stuck_jobs(run.settings.database_path)


def _stalls_at_least(run: SupervisedTraining, count: int):
    async def check() -> bool:
        return run.supervisor.state.stalls >= count
    return check


def hung_worker(root: Path, shared: Path, tally: fw.Tally) -> None:
    asyncio.run(_hung_worker(root, shared, tally))
