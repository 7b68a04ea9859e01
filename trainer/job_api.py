"""The worker's job API: what a handler receives (JobContext), returns (JobOutcome) and raises (JobError).

The handlers and the worker both import this module; it imports neither, so there is no cycle between them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from storage import jobs
from storage.files import FileStore
from storage.settings import Settings
from trainer.lease import LeaseKeeper


class JobError(Exception):
    """A job failed for a reason the user should read: the message is one plain sentence."""


@dataclass(frozen=True)
class JobOutcome:
    state: str  # succeeded, failed, cancelled, or released (back to the queue on shutdown)
    result: dict[str, Any] | None = None
    error: str | None = None


class WorkerHooks(Protocol):
    """The part of the worker that handlers and idle tasks may use (trainer.worker.Worker provides it)."""

    settings: Settings
    conn: sqlite3.Connection
    store: FileStore
    exclusive_gpu: bool
    resources: dict[str, Any]  # long-lived things handlers share, e.g. the generation server

    @property
    def stopping(self) -> bool: ...

    def should_yield_gpu(self) -> bool: ...

    def serve_waiting_generations(self) -> int: ...


@dataclass
class JobContext:
    """What a handler gets: the job, the shared resources, and the hooks back into the worker."""

    worker: WorkerHooks
    job: jobs.Job
    lease: LeaseKeeper
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def conn(self) -> sqlite3.Connection:
        return self.worker.conn

    @property
    def store(self) -> FileStore:
        return self.worker.store

    @property
    def settings(self) -> Settings:
        return self.worker.settings

    def stop_reason(self) -> str | None:
        """'cancel' when the user cancelled, 'shutdown' when the worker must stop (or lost the lease), or when
        training must step aside for waiting generation jobs on a GPU too small for both."""
        if self.lease.cancel_requested:
            return "cancel"
        if self.worker.stopping or self.lease.lost:
            return "shutdown"
        if self.job.kind == "train" and self.worker.should_yield_gpu():
            self.extra["yielded"] = True
            return "shutdown"
        return None

    def between_steps(self) -> None:
        if not self.worker.exclusive_gpu:
            self.worker.serve_waiting_generations()


Handler = Callable[[JobContext], JobOutcome]
IdleTask = Callable[[WorkerHooks], None]  # housekeeping run while the queue is empty
