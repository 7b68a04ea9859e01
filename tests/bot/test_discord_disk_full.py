"""A full disk reaches a Discord user as the one disk-full sentence, never the generic error or a traceback."""

import sqlite3

from storage.disk import DISK_FULL
from tests.bot.conftest import texts


async def test_a_full_database_disk_is_told_as_such(world, bot_services, monkeypatch):
    async def full(req):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(bot_services.jobs, "status", full)
    result = await world.alice.slash(world.channel, "status")
    assert result.acknowledged and result.ephemeral
    assert texts(result) == DISK_FULL and "disk is full" in DISK_FULL
    assert any("disk is full" in str(e) for e in world.env.errors)  # logged for the host
