"""The bot's housekeeping and fault handling: scheduled backups, the low-disk warning, the console's forget sweep,
a supervisor that outlives database errors, and a Discord login that waits out a missing network."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys

import aiohttp
import discord
import pytest
from aiohttp.client_reqrep import ConnectionKey

from bot.discord_login import login_with_retries
from bot.maintenance import DiskWatch, Maintenance
from bot.supervisor import WorkerSupervisor
from storage import backups, jobs
from storage.db import AsyncDatabase
from storage.files import FileStore
from storage.forget import tombstone_user
from storage.subjects import ensure_user
from tests.bot.services.conftest import make_settings


@pytest.fixture
async def parts(tmp_path):
    async def build(**overrides):
        settings = make_settings(tmp_path, **overrides)
        db = await AsyncDatabase.open(settings.database_path)
        opened.append(db)
        return settings, db, FileStore(settings.store_dir)

    opened: list[AsyncDatabase] = []
    yield build
    for db in opened:
        await db.close()


async def test_a_backup_is_made_when_due_and_not_again_until_the_interval(parts):
    settings, db, store = await parts(backup_interval_h=24, backup_keep=2)
    await db.run(ensure_user, 5, "Ann")
    maintenance = Maintenance(settings, db, store)
    await maintenance.run_once()
    await maintenance.run_once()
    made = backups.list_backups(settings.backups_dir)
    assert len(made) == 1 and backups.verify(settings.database_path)[1] == (made[0], None)


async def test_a_training_that_finishes_is_backed_up_at_once_not_a_day_later(parts):
    settings, db, store = await parts(backup_interval_h=24, backup_keep=3)
    await db.run(ensure_user, 5, "Ann")
    maintenance = Maintenance(settings, db, store)
    await maintenance.run_once()  # the first start's backup
    job_id = await db.run(jobs.enqueue_job, "train", {}, user_id=5)
    await db.run(jobs.claim_next_job, "w", 60)
    await asyncio.sleep(0.05)  # finished after that backup was taken
    assert await db.run(jobs.finish_job, job_id, "w", "succeeded", result={})
    await maintenance.run_once()
    await maintenance.run_once()
    made = backups.list_backups(settings.backups_dir)
    assert len(made) == 2  # one more, and only one


async def test_backups_can_be_turned_off(parts):
    settings, db, store = await parts(backup_interval_h=0)
    await Maintenance(settings, db, store).run_once()
    assert backups.list_backups(settings.backups_dir) == []


async def test_admins_are_warned_once_when_free_space_drops_below_the_threshold(parts, caplog):
    settings, db, store = await parts(disk_warn_free_mb=10**9, backup_interval_h=0)  # more than any disk has
    told: list[str] = []

    async def notify(text):
        told.append(text)

    maintenance = Maintenance(settings, db, store, notify=notify)
    with caplog.at_level(logging.WARNING, logger="bot.maintenance"):
        await maintenance.run_once()
        await maintenance.run_once()
    assert len(told) == 1 and "disk is nearly full" in told[0] and "free on" in told[0]
    assert "LIKENESS_DISK_WARN_FREE_MB" in caplog.text


def test_the_disk_warning_rearms_only_after_space_comes_back():
    watch = DiskWatch(threshold_bytes=1000)
    assert [watch.check(free) for free in (2000, 900, 800, 1050, 950, 1200, 900)] == \
        [False, True, False, False, False, False, True]
    assert DiskWatch(threshold_bytes=0).check(0) is False  # 0 turns the warning off


async def test_the_console_sweep_finishes_a_forget_once_the_job_stops(parts):
    settings, db, store = await parts(backup_interval_h=0)
    await db.run(ensure_user, 5, "Ann")
    job_id = await db.run(jobs.enqueue_job, "train", {}, user_id=5)
    await db.run(jobs.claim_next_job, "w", 60.0)
    await db.run(tombstone_user, 5)
    maintenance = Maintenance(settings, db, store, sweep=True, interval_s=0.01)
    await maintenance.run_once()
    assert await db.run(lambda c: c.execute("SELECT count(*) FROM users").fetchone()[0]) == 1  # job still runs
    await db.run(jobs.finish_job, job_id, "w", "cancelled")
    maintenance.start()
    try:
        for _ in range(500):
            if await db.run(lambda c: c.execute("SELECT count(*) FROM users").fetchone()[0]) == 0:
                break
            await asyncio.sleep(0.01)
    finally:
        await maintenance.stop()
    assert await db.run(lambda c: c.execute("SELECT count(*) FROM users").fetchone()[0]) == 0


class FailingRequeue:
    """The real database, whose first `fail` requeues raise SQLite's disk-full error."""

    def __init__(self, db: AsyncDatabase, fail: int) -> None:
        self.db, self.fail, self.requeues = db, fail, 0

    async def run(self, fn, *args, **kwargs):
        if fn is jobs.requeue_owner:
            self.requeues += 1
            if self.requeues <= self.fail:
                raise sqlite3.OperationalError("database or disk is full")
        return await self.db.run(fn, *args, **kwargs)


async def test_the_supervisor_outlives_database_errors_and_requeues_with_backoff(parts, caplog):
    settings, db, _ = await parts()
    flaky = FailingRequeue(db, fail=3)
    supervisor = WorkerSupervisor(settings, flaky, min_backoff_s=0.01, max_backoff_s=0.05)
    supervisor._command = lambda owner: [sys.executable, "-c", "import sys; sys.exit(4)"]
    with caplog.at_level(logging.ERROR, logger="storage.disk"):
        supervisor.start()
        try:
            for _ in range(3000):
                restarted = supervisor.state.starts >= 2
                exit_before_restart = supervisor.state.last_exit_code  # stop() below kills the second one
                if restarted:
                    break
                await asyncio.sleep(0.01)
        finally:
            await supervisor.stop()
    assert flaky.requeues >= 4  # three refusals, then the requeue went through and supervision went on
    assert restarted and exit_before_restart == 4
    assert "the disk is full" in caplog.text and "free on" in caplog.text


class NoNetworkClient:
    """What discord.Client.login does without a network: aiohttp's DNS error, `fails` times."""

    def __init__(self, fails: int) -> None:
        self.fails, self.attempts, self.sessions_closed = fails, 0, 0
        self.http = self
        self.connector = object()  # closed along with the failed session

    async def close(self):
        self.sessions_closed += 1

    async def login(self, token):
        self.attempts += 1
        if self.attempts <= self.fails:
            key = ConnectionKey("discord.com", 443, True, True, None, None, None, None)
            raise aiohttp.ClientConnectorDNSError(key, OSError(-3, "Temporary failure in name resolution"))


async def test_login_retries_with_backoff_one_line_per_attempt(caplog):
    client, waits = NoNetworkClient(fails=3), []

    async def sleep(seconds):
        waits.append(seconds)

    with caplog.at_level(logging.WARNING, logger="bot.discord_login"):
        assert await login_with_retries(client, "t", first_delay_s=2, max_delay_s=5, sleep=sleep) == 4
    assert waits == [2, 4, 5]
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.discord_login"]
    assert len(lines) == 3 and all("cannot reach Discord" in line and "\n" not in line for line in lines)
    assert all(record.exc_info is None for record in caplog.records)  # no traceback
    assert client.sessions_closed == 3 and client.connector is discord.utils.MISSING  # login makes a new one


async def test_a_rejected_token_is_not_retried():
    class Rejected(NoNetworkClient):
        async def login(self, token):
            self.attempts += 1
            raise discord.LoginFailure("Improper token has been passed.")

    client = Rejected(fails=0)
    with pytest.raises(discord.LoginFailure):
        await login_with_retries(client, "t", sleep=lambda s: asyncio.sleep(0))
    assert client.attempts == 1
