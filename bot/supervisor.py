"""Starts the worker process (`python -m trainer`) and keeps it running.

When the worker dies, its jobs go straight back to the queue (no waiting for the lease) and it is restarted with
exponential backoff; a run that stayed up for a while resets the backoff. On shutdown it gets SIGTERM, so it can
checkpoint the current training step, and SIGKILL only if it does not exit in time.

The worker must never outlive this process: it gets our pid (SUPERVISOR_PID_ENV) and a stdin pipe that we hold
and never write (see trainer/process_guard.py). A database error (a full disk, a lock held too long) never ends
supervision: the requeue is retried with backoff until it goes through.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from storage import jobs
from storage.db import AsyncDatabase
from storage.disk import is_disk_full, log_disk_full
from storage.locks import SUPERVISOR_PID_ENV
from storage.logs import QUIET_LIBRARIES_ENV
from storage.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class SupervisorState:
    pid: int | None = None
    owner: str | None = None
    starts: int = 0
    last_exit_code: int | None = None


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
        self.state = SupervisorState()
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.started = asyncio.Event()

    def _command(self, owner: str) -> list[str]:
        # Cluster mode: the dispatcher claims the jobs here and runs them on Ray nodes (README "Scaling out").
        module = "trainer.cluster" if self.settings.cluster_address else "trainer"
        return [sys.executable, "-m", module, "--owner", owner]

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.state.starts += 1
        owner = f"worker-{os.getpid()}-{self.state.starts}"
        env = {**os.environ, **self.settings.worker_env()}
        env.pop("LIKENESS_DISCORD_TOKEN", None)  # the worker never needs the secret
        env.update(QUIET_LIBRARIES_ENV)
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        nice = self.settings.worker_nice
        output = self._open_worker_log()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command(owner), env=env, preexec_fn=(lambda: os.nice(nice)) if nice else None,
                stdout=output, stderr=output,
                stdin=asyncio.subprocess.PIPE,  # held open and never written: EOF tells the worker we are gone
            )
        finally:
            if output is not None:
                output.close()
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
            began = time.monotonic()
            self._process = await self._spawn()
            code = await self._process.wait()
            self.state.last_exit_code = code
            requeued, failed = await self._requeue_after_exit(self.state.owner)
            if self._stopping:
                break
            log.warning("worker exited with %s; requeued %s, gave up %s; restarting in %.0fs",
                        code, requeued, failed, backoff)
            if time.monotonic() - began > self.stable_after_s:
                backoff = self.min_backoff_s
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    async def _requeue_after_exit(self, owner: str | None) -> tuple[list[int], list[int]]:
        """Give the dead worker's jobs back, retrying with backoff while the database refuses (full disk)."""
        delay = self.min_backoff_s
        while True:
            try:
                return await self.db.run(jobs.requeue_owner, owner)
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
