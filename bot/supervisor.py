"""Starts the worker process (`python -m trainer`) and keeps it running.

When the worker dies, its jobs go straight back to the queue (no waiting for the lease) and it is restarted with
exponential backoff; a run that stayed up for a while resets the backoff. On shutdown it gets SIGTERM, so it can
checkpoint the current training step, and SIGKILL only if it does not exit in time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

from storage import jobs
from storage.db import AsyncDatabase
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
    ) -> None:
        self.settings = settings
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
        return [sys.executable, "-m", "trainer", "--owner", owner]

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.state.starts += 1
        owner = f"worker-{os.getpid()}-{self.state.starts}"
        env = {**os.environ, **self.settings.worker_env()}
        env.pop("LIKENESS_DISCORD_TOKEN", None)  # the worker never needs the secret
        nice = self.settings.worker_nice
        process = await asyncio.create_subprocess_exec(
            *self._command(owner), env=env, preexec_fn=(lambda: os.nice(nice)) if nice else None
        )
        self.state.pid, self.state.owner = process.pid, owner
        log.info("worker started (pid %d, owner %s)", process.pid, owner)
        self.started.set()
        return process

    async def _run(self) -> None:
        backoff = self.min_backoff_s
        while not self._stopping:
            began = time.monotonic()
            self._process = await self._spawn()
            code = await self._process.wait()
            self.state.last_exit_code = code
            requeued, failed = await self.db.run(jobs.requeue_owner, self.state.owner)
            if self._stopping:
                break
            log.warning("worker exited with %s; requeued %s, gave up %s; restarting in %.0fs",
                        code, requeued, failed, backoff)
            if time.monotonic() - began > self.stable_after_s:
                backoff = self.min_backoff_s
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="worker-supervisor")

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
