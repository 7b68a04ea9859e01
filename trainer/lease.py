"""Keeps a running job's lease alive from a background thread and writes its progress.

Training steps can take many seconds on a small GPU, and loading a model takes minutes, so the lease cannot
depend on the training loop calling back. The loop only records its latest progress here; this thread writes it
at most every `write_interval_s` together with the lease renewal, and reads back the cancel flag.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

from storage import jobs
from storage.db import connect
from storage.disk import is_disk_full, log_disk_full

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(
        self, db_path: Path, job_id: int, owner: str, lease_s: float, write_interval_s: float = 2.0
    ) -> None:
        self.job_id = job_id
        self.owner = owner
        self.lease_s = lease_s
        self.interval_s = max(0.05, min(write_interval_s, lease_s / 3))
        self._db_path = db_path
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.cancel_requested = False
        self.lost = False  # the lease expired and the job may belong to someone else now

    def report(self, **progress: Any) -> None:
        """Record progress (step, total, message, eta_at, preview_path); written on the next beat."""
        with self._lock:
            self._pending.update({k: v for k, v in progress.items() if v is not None})

    def beat(self, conn: Any) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        reply = jobs.heartbeat(conn, self.job_id, self.owner, self.lease_s, **pending)
        self.cancel_requested = self.cancel_requested or reply.cancel_requested
        if not reply.alive and not self.lost:
            log.warning("job %d: lease lost", self.job_id)
            self.lost = True

    def _run(self) -> None:
        conn = connect(self._db_path, apply_migrations=False)
        full = False
        try:
            while not self._stopped.wait(self.interval_s):
                try:
                    self.beat(conn)
                    full = False
                except Exception as exc:  # a busy or full database must not kill the heartbeat
                    if not is_disk_full(exc, self._db_path.parent):
                        log.exception("job %d: heartbeat failed", self.job_id)
                    elif not full:  # one line per stretch of full disk, not one every beat
                        log_disk_full(f"job {self.job_id}: heartbeat", self._db_path.parent, exc)
                        full = True
            with suppress(sqlite3.Error):  # last progress before the job is finished (not possible on a full disk)
                self.beat(conn)
        finally:
            conn.close()

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
