"""Per-user limits: one training job at a time, a few queued generations, a short cooldown. Admins are exempt.

The cooldown lives in memory (it only smooths bursts; a restart may forget it). The counted limits read the jobs
table inside the transaction that queues, so two requests racing cannot both slip past them.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable

from bot.services.errors import ServiceError
from storage import jobs
from storage.settings import Settings


class UsageLimits:
    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._last_generation: dict[int, float] = {}

    def exempt(self, user_id: int) -> bool:
        return self.settings.is_admin(user_id)

    # Cooldown between generation requests.
    def cooldown_left(self, user_id: int) -> float:
        if self.exempt(user_id) or user_id not in self._last_generation:
            return 0.0
        elapsed = self._clock() - self._last_generation[user_id]
        return max(0.0, self.settings.generation_cooldown_s - elapsed)

    def begin_generation(self, user_id: int) -> float | None:
        """Check the cooldown and claim it now (so a burst of requests cannot all pass); returns what to restore
        with `undo_generation` if the request then fails."""
        left = self.cooldown_left(user_id)
        if left > 0:
            seconds = max(1, math.ceil(left))
            raise ServiceError(
                "cooldown", f"Slow down a little: you can ask for another image in {seconds} s."
            )
        previous = self._last_generation.get(user_id)
        if not self.exempt(user_id):
            self._last_generation[user_id] = self._clock()
        return previous

    def undo_generation(self, user_id: int, previous: float | None) -> None:
        if previous is None:
            self._last_generation.pop(user_id, None)
        else:
            self._last_generation[user_id] = previous

    def forget_user(self, user_id: int) -> None:
        self._last_generation.pop(user_id, None)

    # Counted limits (run on the database thread, inside the queueing transaction).
    def check_queued_generations(self, conn: sqlite3.Connection, user_id: int) -> None:
        if self.exempt(user_id):
            return
        limit = self.settings.max_queued_generations_per_user
        waiting = jobs.count_active(conn, user_id, "generate")
        if waiting >= limit:
            raise ServiceError(
                "too_many_queued",
                f"You already have {waiting} image request{'s' if waiting != 1 else ''} waiting (the limit is "
                f"{limit}); wait for one to finish, or /cancel one.",
            )

    def training_slot_free(self, conn: sqlite3.Connection, user_id: int) -> bool:
        """Whether this user may start another training job now (admins always may)."""
        return self.exempt(user_id) or (
            jobs.count_active(conn, user_id, "train") < self.settings.max_training_jobs_per_user
        )

    def check_training_jobs(self, conn: sqlite3.Connection, user_id: int) -> None:
        if self.training_slot_free(conn, user_id):
            return
        newest = [job for job in jobs.active_jobs(conn, user_id) if job.kind == "train"][-1]
        state = "running" if newest.state == "running" else "waiting in the queue"
        raise ServiceError(
            "training_busy",
            f"You already have a training job (#{newest.id}) {state}; wait for it to finish or /cancel it, "
            "then try again (/photos add works meanwhile).",
        )
