"""Housekeeping the bot process runs on a timer, for the Discord bot and the console alike.

- Online backups of the database when one is due (LIKENESS_BACKUP_INTERVAL_H, newest LIKENESS_BACKUP_KEEP kept),
  and at once after a training finishes (so the first trained adapter never waits a day for its backup).
- A free-space watch on the data disk: below LIKENESS_DISK_WARN_FREE_MB the admins are told once, and again only
  after space has recovered and dropped again.
- Optionally the forget sweep (the console has no other timer for it, so a forget that waited for a running job
  finishes as soon as that job stops).

No step may end the loop: each failure is logged and tried again on the next round.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from storage import backups, forget, jobs
from storage.db import AsyncDatabase
from storage.disk import describe_free, free_bytes, human_bytes
from storage.files import FileStore
from storage.settings import Settings

log = logging.getLogger(__name__)

Notify = Callable[[str], Awaitable[None] | None]
MAINTENANCE_INTERVAL_S = 5.0
BACKUP_RETRY_S = 600.0
RECOVERED_FACTOR = 1.1  # re-arm the warning only once space is clearly back above the threshold


@dataclass
class DiskWatch:
    threshold_bytes: int
    warned: bool = False

    def check(self, free: int) -> bool:
        """True when the admins should be warned now (the first round below the threshold)."""
        if self.threshold_bytes <= 0:
            return False
        if free < self.threshold_bytes and not self.warned:
            self.warned = True
            return True
        if free > self.threshold_bytes * RECOVERED_FACTOR:
            self.warned = False
        return False


class Maintenance:
    def __init__(self, settings: Settings, db: AsyncDatabase, store: FileStore, *, notify: Notify | None = None,
                 sweep: bool = False, interval_s: float = MAINTENANCE_INTERVAL_S) -> None:
        self.settings = settings
        self.db = db
        self.store = store
        self.notify = notify
        self.sweep = sweep
        self.interval_s = interval_s
        self.disk = DiskWatch(settings.disk_warn_free_mb * 1024 * 1024)
        self._task: asyncio.Task | None = None
        self._next_backup_try = 0.0

    async def run_once(self) -> None:
        for step in (self._sweep, self._backup, self._watch_disk):
            try:
                await step()
            except Exception:
                log.exception("maintenance step %s failed; it runs again shortly", step.__name__)

    async def _sweep(self) -> None:
        if self.sweep and await self.db.run(forget.sweep_forgotten, self.store):
            log.info("finished a pending forget")

    async def _backup(self) -> None:
        folder = self.settings.backups_dir
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_backup_try:
            return
        trained_at = await self.db.run(jobs.last_succeeded_at, "train")
        if not backups.backup_due(folder, self.settings.backup_interval_h, changed_at=trained_at):
            return
        try:
            # On the bot's database thread: the backup API copies in slices, so other queries wait at most one.
            await self.db.run(backups.backup_database, folder, self.settings.backup_keep)
        except (backups.BackupError, OSError) as exc:
            self._next_backup_try = loop.time() + BACKUP_RETRY_S
            log.warning("no backup was made (%s); trying again in %.0f minutes", exc, BACKUP_RETRY_S / 60)

    async def _watch_disk(self) -> None:
        free = free_bytes(self.settings.data_dir)
        if not self.disk.check(free):
            return
        text = (f"Likeness: the server's disk is nearly full ({describe_free(self.settings.data_dir)}, below the "
                f"{human_bytes(self.disk.threshold_bytes)} set by LIKENESS_DISK_WARN_FREE_MB). Training and "
                f"pictures will fail once it is full; please free some space.")
        log.warning(text)
        if self.notify is not None:
            sent = self.notify(text)
            if inspect.isawaitable(sent):
                await sent

    async def _loop(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


def admin_notifier(client, settings: Settings) -> Notify:
    """Send a warning by DM to every admin (LIKENESS_ADMIN_USER_IDS); one who cannot be reached is logged."""
    async def notify(text: str) -> None:
        for admin_id in settings.admin_user_ids:
            try:
                user = client.get_user(admin_id) or await client.fetch_user(admin_id)
                await user.send(text)
            except Exception as exc:  # discord.HTTPException and friends: the log line above still stands
                log.warning("could not tell admin %d about the disk (%s)", admin_id, exc)

    return notify
