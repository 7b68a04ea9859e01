"""Starts the worker process (`python -m trainer`) and keeps it running.

When the worker dies, its jobs go straight back to the queue (no waiting for the lease) and it is restarted with
exponential backoff; a run that stayed up for a while resets the backoff. On shutdown it gets SIGTERM, so it can
checkpoint the current training step, and SIGKILL only if it does not exit in time.

The worker must never outlive this process: it gets our pid (SUPERVISOR_PID_ENV) and a stdin pipe that we hold
and never write (see trainer/process_guard.py). A database error (a full disk, a lock held too long) never ends
supervision: the requeue is retried with backoff until it goes through.

A worker that hangs (stopped, deadlocked) stops renewing its job's lease. The supervisor checks the leases of its
worker's jobs several times a lease: once one has run out, the worker is killed, its jobs go back to the queue with
the message "stalled, restarting" (so nobody sees a stale ETA), and a new worker resumes them from their last
checkpoint. Not while the disk is full: then the lease runs out because nothing can be written, and the worker
records the job's outcome itself. When another worker already holds the data directory's worker lock (one started
by hand), ours waits for it instead of being restarted again and again. The worker runs under `nice` (set on the
command line, never with preexec_fn, which can deadlock a process that runs threads).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from storage import jobs
from storage.db import AsyncDatabase
from storage.disk import LOW_SPACE_BYTES, free_bytes, is_disk_full, log_disk_full
from storage.locks import SUPERVISOR_PID_ENV, WORKER_LOCKED_EXIT_CODE, is_held, worker_lock
from storage.logs import QUIET_LIBRARIES_ENV
from storage.settings import Settings

log = logging.getLogger(__name__)

LOCK_POLL_S = 2.0


@dataclass
class SupervisorState:
    pid: int | None = None
    owner: str | None = None
    starts: int = 0
    last_exit_code: int | None = None
    stalls: int = 0  # workers killed for missing a lease
    last_stall_at: float | None = None  # time.monotonic() of the last such kill
    waiting_for_lock: bool = False  # another worker holds the data directory


class WorkerSupervisor:
    def __init__(
        self,
        settings: Settings,
        db: AsyncDatabase,
        *,
        min_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        stable_after_s: float = 300.0,
        stop_timeout_s: float = 120.0,
        worker_log: Path | None = None,
        stall_check_s: float | None = None,
    ) -> None:
        """`worker_log`: append the worker's output (its log and any library chatter) to this file instead of
        sharing this process's terminal; the console passes the host's log file."""
        self.settings = settings
        self.worker_log = worker_log
        self.db = db
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s
        self.stop_timeout_s = stop_timeout_s
        # Several checks a lease, so a stall is noticed well within two leases.
        self.stall_check_s = stall_check_s or max(0.2, min(5.0, settings.worker_lease_s / 4))
        self.state = SupervisorState()
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.started = asyncio.Event()

    def _command(self, owner: str) -> list[str]:
        # Cluster mode: the dispatcher claims the jobs here and runs them on Ray nodes (README "Scaling out").
        module = "trainer.cluster" if self.settings.cluster_address else "trainer"
        command = [sys.executable, "-m", module, "--owner", owner]
        nice = self.settings.worker_nice
        tool = shutil.which("nice") if nice else None
        return [tool, "-n", str(nice), *command] if tool else command

    def _lower_priority(self, pid: int) -> None:
        """Where no `nice` command exists: lower the started worker's priority from here (no preexec_fn)."""
        nice = self.settings.worker_nice
        if nice and not shutil.which("nice"):
            try:
                os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid) + nice)
            except (OSError, AttributeError):
                log.warning("could not lower the worker's CPU priority")

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.state.starts += 1
        owner = f"worker-{os.getpid()}-{self.state.starts}"
        env = {**os.environ, **self.settings.worker_env()}
        env.pop("LIKENESS_DISCORD_TOKEN", None)  # the worker never needs the secret
        env.update(QUIET_LIBRARIES_ENV)
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        output = self._open_worker_log()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command(owner), env=env, stdout=output, stderr=output,
                stdin=asyncio.subprocess.PIPE,  # held open and never written: EOF tells the worker we are gone
            )
        finally:
            if output is not None:
                output.close()
        self._lower_priority(process.pid)
        self.state.pid, self.state.owner = process.pid, owner
        log.info("worker started (pid %d, owner %s)", process.pid, owner)
        self.started.set()
        return process

    def _open_worker_log(self) -> IO[bytes] | None:
        if self.worker_log is None:
            return None
        self.worker_log.parent.mkdir(parents=True, exist_ok=True)
        return open(self.worker_log, "ab")

    async def _run(self) -> None:
        backoff = self.min_backoff_s
        while not self._stopping:
            await self._wait_for_worker_lock()
            if self._stopping:
                break
            began = time.monotonic()
            self._process = await self._spawn()
            watcher = asyncio.create_task(self._watch_leases(self._process, self.state.owner), name="lease-watch")
            try:
                code = await self._process.wait()
            finally:
                watcher.cancel()
            stalled = (watcher.done() and not watcher.cancelled() and watcher.exception() is None
                       and watcher.result())
            self.state.last_exit_code = code
            message = jobs.STALLED_MESSAGE if stalled else jobs.REQUEUED_MESSAGE
            requeued, failed = await self._requeue_after_exit(self.state.owner, message)
            if self._stopping:
                break
            if code == WORKER_LOCKED_EXIT_CODE:  # another worker took the lock first: wait for it, quietly
                await asyncio.sleep(self.min_backoff_s)
                continue
            log.warning("worker exited with %s; requeued %s, gave up %s; restarting in %.0fs",
                        code, requeued, failed, backoff)
            if time.monotonic() - began > self.stable_after_s:
                backoff = self.min_backoff_s
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    async def _wait_for_worker_lock(self) -> None:
        """Another worker (started by hand) serves this data directory: ours starts once it stops."""
        lock = worker_lock(self.settings.data_dir)
        if not is_held(lock.path):
            return
        self.state.waiting_for_lock = True
        log.warning("another worker (%s) already serves %s; this one starts when it stops",
                    lock.describe_holder(), self.settings.data_dir)
        while not self._stopping and is_held(lock.path):
            await asyncio.sleep(LOCK_POLL_S)
        self.state.waiting_for_lock = False

    async def _watch_leases(self, process: asyncio.subprocess.Process, owner: str | None) -> bool:
        """Kill the worker once one of its jobs' leases has run out (it stopped renewing them). True if it did."""
        full_disk_logged = False
        while process.returncode is None:
            await asyncio.sleep(self.stall_check_s)
            try:
                stalled = await self.db.run(jobs.stalled_jobs, owner)
            except Exception as exc:  # a busy or full database: look again next round
                log.debug("lease check failed: %s", exc)
                continue
            if not stalled or process.returncode is not None:
                continue
            if free_bytes(self.settings.data_dir) < LOW_SPACE_BYTES:
                if not full_disk_logged:
                    log.warning("job(s) %s: the worker's lease ran out while the disk is full; not restarting it",
                                stalled)
                    full_disk_logged = True
                continue
            log.warning("worker %s stopped renewing the lease of job(s) %s (no heartbeat for %.0f s): killing it; "
                        "its jobs resume from their last checkpoint", owner, stalled, self.settings.worker_lease_s)
            self.state.stalls += 1
            self.state.last_stall_at = time.monotonic()
            process.kill()  # SIGKILL: a stopped or deadlocked process handles nothing else
            return True
        return False

    async def _requeue_after_exit(self, owner: str | None,
                                  message: str = jobs.REQUEUED_MESSAGE) -> tuple[list[int], list[int]]:
        """Give the dead worker's jobs back, retrying with backoff while the database refuses (full disk)."""
        delay = self.min_backoff_s
        while True:
            try:
                return await self.db.run(jobs.requeue_owner, owner, message)
            except Exception as exc:
                if is_disk_full(exc, self.settings.data_dir):
                    log_disk_full("requeueing the worker's jobs", self.settings.data_dir, exc)
                else:
                    log.error("requeueing the worker's jobs failed (%s); retrying in %.0fs", exc, delay)
                if self._stopping:
                    return [], []
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    async def _supervise(self) -> None:
        """_run, resumed after anything unexpected: supervision must not end while the bot runs."""
        while not self._stopping:
            try:
                await self._run()
            except Exception:
                log.exception("worker supervision failed; resuming in %.0fs", self.min_backoff_s)
                await asyncio.sleep(self.min_backoff_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="worker-supervisor")

    async def stop(self) -> None:
        """SIGTERM, wait for the worker to checkpoint and exit, then SIGKILL if it overstays."""
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.stop_timeout_s)
            except TimeoutError:
                log.warning("worker did not stop in %.0fs; killing it", self.stop_timeout_s)
                process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None
