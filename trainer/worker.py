"""The GPU worker: claims jobs from the durable queue and runs them, one at a time.

Generation jobs do not wait for a whole training run: between training steps the trainer calls
`serve_waiting_generations`, which runs every queued generation job before the next step (checked at most once a
second, so training pays almost nothing for it).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from storage import jobs
from storage.db import connect
from storage.disk import is_disk_full, log_disk_full
from storage.files import FileStore
from storage.settings import Settings
from trainer.disk_guard import DiskReserve, check_space_for, disk_full_outcome
from trainer.gpu_policy import exclusive_gpu
from trainer.job_api import Handler, IdleTask, JobContext, JobError, JobOutcome
from trainer.lease import LeaseKeeper
from trainer.versions import dependency_problem

log = logging.getLogger(__name__)

UNEXPECTED = "The worker hit an unexpected error; the host can find the details in the worker log."
PREEMPT_CHECK_S = 1.0
IDLE_TASK_INTERVAL_S = 5.0
DISK_FULL_WAIT_S = 10.0


def default_owner() -> str:
    return f"worker-{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(
        self,
        settings: Settings,
        handlers: Mapping[str, Handler],
        *,
        owner: str | None = None,
        idle_tasks: Sequence[IdleTask] = (),
    ) -> None:
        """`handlers` maps each job kind to the function that runs it; `idle_tasks` run while the queue is empty.
        `trainer.__main__.build_worker` wires the real ones."""
        self.settings = settings
        self.owner = owner or default_owner()
        self.conn = connect(settings.database_path)
        self.store = FileStore(settings.store_dir)
        self.handlers = dict(handlers)
        self.idle_tasks = tuple(idle_tasks)
        self._last_idle_run = 0.0
        self._job_started = 0.0
        self.exclusive_gpu = exclusive_gpu(settings)
        self._stop = threading.Event()
        self._serving = False
        self._last_preempt_check = 0.0
        self.resources: dict[str, Any] = {}  # long-lived things handlers share, e.g. the generation server
        self.reserve = DiskReserve(settings.data_dir)

    # Lifecycle.
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        log.info("stop requested; finishing the current step")
        self._stop.set()

    def close(self) -> None:
        for resource in self.resources.values():
            close = getattr(resource, "close", None)
            if callable(close):
                close()
        self.conn.close()

    def run(self, *, until_idle: bool = False) -> int:
        """Run jobs until stopped (or, with until_idle, until the queue is empty). Returns how many ran."""
        self.store.sweep_temp_files()
        self.reserve.ensure()
        done = 0
        while not self.stopping:
            try:
                ran = self.run_next()
            except Exception as exc:  # a full disk between jobs: wait for space rather than die
                if until_idle or not is_disk_full(exc, self.settings.data_dir):
                    raise
                log_disk_full("the worker (waiting for space)", self.settings.data_dir, exc)
                self._stop.wait(DISK_FULL_WAIT_S)
                continue
            if ran:
                done += 1
            elif until_idle:
                break
            else:
                self.run_idle_tasks()
                self._stop.wait(self.settings.worker_poll_s)
        return done

    def run_idle_tasks(self) -> None:
        """Housekeeping while the queue is empty, at most every IDLE_TASK_INTERVAL_S."""
        now = time.monotonic()
        if now - self._last_idle_run < IDLE_TASK_INTERVAL_S:
            return
        self._last_idle_run = now
        self.reserve.ensure()
        for task in self.idle_tasks:
            try:
                task(self)
            except Exception:
                log.exception("idle task %s failed", getattr(task, "__name__", task))

    def run_next(self, kinds: tuple[str, ...] = jobs.KINDS) -> bool:
        requeued, failed = jobs.requeue_expired(self.conn)
        if requeued or failed:
            log.info("requeued %s, gave up %s after expired leases", requeued, failed)
        job = jobs.claim_next_job(self.conn, self.owner, self.settings.worker_lease_s, kinds)
        if job is None:
            return False
        self.run_job(job)
        return True

    # One job.
    def run_job(self, job: jobs.Job) -> JobOutcome:
        log.info("job %d (%s) attempt %d started", job.id, job.kind, job.attempts)
        if job.kind == "train":
            self._job_started = time.monotonic()
            if self.exclusive_gpu:
                self._free_serving_memory()
        with LeaseKeeper(self.settings.database_path, job.id, self.owner, self.settings.worker_lease_s) as lease:
            outcome = self._run_handler(JobContext(self, job, lease))
        self._record(job, outcome)
        return outcome

    def _run_handler(self, ctx: JobContext) -> JobOutcome:
        handler = self.handlers.get(ctx.job.kind)
        if handler is None:
            return JobOutcome("failed", error=f"This worker cannot run {ctx.job.kind} jobs.")
        try:
            check_space_for(ctx.settings, ctx.job)
            return handler(ctx)
        except JobError as exc:
            return JobOutcome("failed", error=str(exc))
        except Exception as exc:
            if (full := disk_full_outcome(exc, ctx.settings, ctx.job)) is not None:
                return full
            log.exception("job %d (%s) crashed", ctx.job.id, ctx.job.kind)
            return JobOutcome("failed", error=dependency_problem(exc) or UNEXPECTED)

    def _record(self, job: jobs.Job, outcome: JobOutcome) -> None:
        # On a full disk the reserve gives the database room for this one write, so no job is left running.
        if outcome.state == "released":
            ok = self.reserve.write(lambda: jobs.release_job(self.conn, job.id, self.owner,
                                                             outcome.error or "paused; will resume"))
        else:
            ok = self.reserve.write(lambda: jobs.finish_job(self.conn, job.id, self.owner, outcome.state,
                                                            result=outcome.result, error=outcome.error))
        log.info("job %d finished: %s%s", job.id, outcome.state, "" if ok else " (lease was lost; not recorded)")

    # Preemption by interactive generation.
    def should_yield_gpu(self) -> bool:
        """Exclusive mode: a generation job is waiting and training has run its minimum stretch."""
        if not self.exclusive_gpu:
            return False
        now = time.monotonic()
        if now - self._job_started < self.settings.preempt_min_interval_s:
            return False
        if now - self._last_preempt_check < PREEMPT_CHECK_S:
            return False
        self._last_preempt_check = now
        return jobs.count_waiting(self.conn, ("generate",)) > 0

    def _free_serving_memory(self) -> None:
        for resource in self.resources.values():
            release = getattr(resource, "release_gpu", None)
            if callable(release):
                release()

    def serve_waiting_generations(self) -> int:
        """Run queued generation jobs now (called between training steps). Returns how many ran."""
        now = time.monotonic()
        if self._serving or self.stopping or now - self._last_preempt_check < PREEMPT_CHECK_S:
            return 0
        self._last_preempt_check = now
        if not jobs.count_waiting(self.conn, ("generate",)):
            return 0
        self._serving = True
        served = 0
        try:
            while not self.stopping and self.run_next(("generate",)):
                served += 1
        finally:
            self._serving = False
        return served
