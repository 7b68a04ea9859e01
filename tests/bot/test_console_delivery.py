"""The console marks a finished job's notice delivered only once its pictures are written: a write that fails (a
full disk, an unusable --out) loses nothing, and the next start writes them. Exports never leave half a zip."""

from __future__ import annotations

import errno
import io
import re
import shutil
from pathlib import Path

import pytest

from bot import console_jobs
from bot.console import ConsoleSession
from bot.services import Services
from storage import jobs
from storage.db import AsyncDatabase
from storage.files import FileStore
from tests.bot.conftest import make_settings
from tests.bot.queue_driver import QueueDriver
from tests.bot.services.conftest import add_fake_photos, add_subject


@pytest.fixture
async def parts(tmp_path):
    settings = make_settings(tmp_path, allowed_guild_ids=[], generation_cooldown_s=0)
    db = await AsyncDatabase.open(settings.database_path)
    services = Services.build(settings, db, FileStore(settings.store_dir))
    driver = QueueDriver(settings)
    yield settings, services, driver
    driver.close()
    await db.close()


def _session(services, out: Path) -> tuple[ConsoleSession, io.StringIO]:
    stdout = io.StringIO()
    return ConsoleSession(services, out_dir=out, stdout=stdout, waits=True, background=True, poll_s=0.05,
                          progress_every_s=0, job_timeout_s=60), stdout


async def _finished_generation(services, driver, session) -> int:
    await session.run(['imagine "a red apple on a table" --count 2'])
    job = driver.claim(("generate",))
    driver.finish_generation(job)
    return job.id


async def test_pictures_that_cannot_be_written_stay_undelivered_until_the_next_start(parts, tmp_path):
    settings, services, driver = parts
    out = tmp_path / "out"
    out.write_text("a file where the folder should be")  # every write into out/ fails
    first, printed = _session(services, out)
    job_id = await _finished_generation(services, driver, first)
    await first.jobs.wait(job_id)
    assert "error: could not write the pictures" in printed.getvalue()
    assert "written the next time the console starts" in printed.getvalue()
    assert not (await services.db.run(jobs.get_job, job_id)).notified  # not lost
    await first.finish()

    out.unlink()
    second, printed = _session(services, out)
    await second.run([])
    wrote = re.findall(r"wrote (\S+)", printed.getvalue())
    assert len(wrote) == 3 and all(Path(p).stat().st_size > 0 for p in wrote)  # two pictures and the grid
    assert (await services.db.run(jobs.get_job, job_id)).notified
    await second.finish()


async def test_a_write_that_fails_midway_leaves_no_picture_behind(parts, tmp_path, monkeypatch):
    settings, services, driver = parts
    out = tmp_path / "out"
    copies = []
    real_copy = shutil.copyfileobj

    def second_copy_hits_a_full_disk(reader, writer, *args):
        copies.append(1)
        if len(copies) == 2:
            writer.write(b"half a picture")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_copy(reader, writer, *args)

    monkeypatch.setattr(console_jobs.shutil, "copyfileobj", second_copy_hits_a_full_disk)
    session, printed = _session(services, out)
    job_id = await _finished_generation(services, driver, session)
    await session.jobs.wait(job_id)
    assert "the disk is full (" in printed.getvalue() and " free on " in printed.getvalue()
    assert sorted(out.iterdir()) == []  # neither the half picture nor the first, complete one
    assert not (await services.db.run(jobs.get_job, job_id)).notified
    await session.finish()


async def test_an_export_on_a_full_disk_leaves_no_partial_zip(parts, tmp_path, monkeypatch):
    settings, services, driver = parts
    subject = await services.db.run(lambda conn: add_subject(conn, 1, "rraj"))
    await services.db.run(add_fake_photos, subject, 2)
    session, printed = _session(services, tmp_path / "out")
    await session.run(["train --subject rraj"])
    driver.finish_training(driver.claim(("train",)), size=64 * 1024)
    await session.jobs.wait(1)

    def full_disk(reader, writer, *args):
        writer.write(b"PK\x03\x04 the first 32 KB of a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(console_jobs.shutil, "copyfileobj", full_disk)
    await session.run(["export rraj"])
    assert re.search(r"error: The server's disk is full.*free on .*nothing was left half-written", printed.getvalue())
    assert list((tmp_path / "out").glob("*.zip")) == [] and list((tmp_path / "out").glob(".*")) == []
    monkeypatch.undo()
    await session.run(["export rraj"])
    assert len(list((tmp_path / "out").glob("*.zip"))) == 1
    await session.finish()
