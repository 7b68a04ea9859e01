"""The newcomer's first hour in the console, issue 28 items 3-11 and issue 24 item 4: replies that say exactly what
happened, files in out/ that go with what they copy, and options that work. The worker's side is played by
QueueDriver; photo checks are the real intake."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import pytest

from bot.console import ConsoleSession, operator_settings
from bot.console_warnings import TerminalWarnings
from bot.services import Requester, Services
from storage import jobs
from storage.db import AsyncDatabase
from storage.files import FileStore
from tests.bot.conftest import make_settings
from tests.bot.queue_driver import QueueDriver
from tests.bot.services.conftest import add_fake_photos, add_subject
from tests.corpus import cat_jpeg, coffee_jpeg


class Console:
    def __init__(self, services: Services, out_dir: Path) -> None:
        self.stdout = io.StringIO()
        self.session = ConsoleSession(services, out_dir=out_dir, stdout=self.stdout, waits=True, background=True,
                                      poll_s=0.05, progress_every_s=0, job_timeout_s=120)

    async def run(self, *lines: str) -> str:
        start = self.stdout.tell()
        await self.session.run(lines)
        return self.stdout.getvalue()[start:]


@pytest.fixture
async def parts(tmp_path):
    settings = operator_settings(make_settings(tmp_path, allowed_guild_ids=[]))  # as run_console builds them
    db = await AsyncDatabase.open(settings.database_path)
    services = Services.build(settings, db, FileStore(settings.store_dir))
    driver = QueueDriver(settings)
    console = Console(services, tmp_path / "out")
    yield services, driver, console
    await console.session.finish()
    driver.close()
    await db.close()


def stored(conn, trigger: str = "rraj", photos: int = 3, owner: int = 1):
    subject = add_subject(conn, owner, trigger)
    add_fake_photos(conn, subject, photos)
    return subject


async def settle(console: Console) -> str:
    """Let the background followers print what they have to, then return everything printed."""
    for _ in range(10):
        await asyncio.sleep(0.06)
    return console.stdout.getvalue()


# Item 3: unshare.
async def test_unshare_names_the_access_that_remains_and_a_grantee_gets_a_true_answer(parts):
    services, _, console = parts
    await services.db.run(stored)
    # A share with "this server" made by an older version (the console has one local server id).
    await services.sharing.share(Requester(1, "you", 1), "rraj", guild_id=1)
    printed = await console.run("share rraj --user 2", "unshare rraj --user 2")
    assert "user 2 can no longer use rraj" not in printed
    assert "still use it here" in printed and "unshare rraj --server takes that back" in printed
    printed = await console.run("as 2", "unshare rraj --user 2", "as 1", "share rraj --server",
                                "unshare rraj --server")
    assert "You can always use your own subjects" not in printed
    assert "error: `rraj` is not your subject, so only its owner can change who may use it" in printed
    assert "its owner shared it with everyone in this server" in printed
    assert "error: the console has no server to share with; share with one person: `share rraj --user 2`" in printed
    assert "Everyone in this server can no longer use rraj" in printed


# Item 4 and issue 24 item 4: training.
async def test_no_job_is_queued_when_every_new_photo_is_rejected(parts, tmp_path):
    services, _, console = parts
    await services.db.run(stored)
    (tmp_path / "coffee.jpg").write_bytes(coffee_jpeg())
    (tmp_path / "cat.jpg").write_bytes(cat_jpeg())
    printed = await console.run(f"train {tmp_path}/coffee.jpg {tmp_path}/cat.jpg --trigger rraj")
    assert "0 of 2 photo(s) accepted" in printed and "queued" not in printed.replace("no training was queued", "")
    assert "Run `train --subject rraj` to retrain from them anyway." in printed
    assert await services.db.run(jobs.active_jobs, 1) == []


async def test_an_own_look_alike_trigger_is_refused_with_the_console_option(parts, tmp_path):
    services, _, console = parts
    own = await services.db.run(stored, "zqviix")
    (tmp_path / "a.jpg").write_bytes(coffee_jpeg())
    printed = await console.run(f"train {tmp_path}/a.jpg --trigger zqvllx")
    assert printed.startswith("error: `zqvllx` is too close to your `zqviix`; pick another trigger, or use "
                              "`train --subject zqviix`")
    assert "/train" not in printed
    assert await services.db.run(lambda conn: conn.execute(
        "SELECT count(*) FROM photos WHERE subject_id = ?", (own.id,)).fetchone()[0]) == 3


# Item 5: delete and forget.
async def test_delete_and_forget_remove_the_consoles_copies_and_list_what_they_cannot(parts, tmp_path):
    services, driver, console = parts
    out = tmp_path / "out"
    await console.run('imagine "a red apple" --count 2')
    driver.finish_generation(driver.claim(("generate",)))
    await console.run("wait 1")
    assert sorted(p.name for p in out.iterdir()) == ["gen1-1.png", "gen1-2.png", "gen1-grid.png"]
    printed = await console.run("delete 1")
    assert "Deleted generation 1" in printed and "Removed 3 copies the console wrote" in printed
    assert list(out.iterdir()) == []

    await services.db.run(stored)
    await console.run("train --subject rraj")
    driver.finish_training(driver.claim(("train",)))
    await console.run("wait 2", 'imagine "a photo of rraj person" --count 2')
    driver.finish_generation(driver.claim(("generate",)))
    printed = await console.run("wait 3", "export rraj")
    assert (out / "likeness-rraj-v1.zip").is_file() and (out / "gen2-1.png").is_file()
    (out / "gen2-1.png").write_bytes(b"my own edit")  # the user changed this copy: it is theirs now
    (out / "notes.txt").write_text("mine")
    printed = await console.run("forget --yes")
    assert "Removed 3 copies" in printed
    assert f"Could not remove 1 file: {(out / 'gen2-1.png').resolve()} (changed since the console wrote it" in printed
    assert sorted(p.name for p in out.iterdir()) == ["gen2-1.png", "notes.txt"]


# Item 7: messages.
async def test_messages_say_what_happened(parts, tmp_path):
    services, driver, console = parts
    (tmp_path / "a.jpg").write_bytes(coffee_jpeg())
    printed = await console.run("admin add-style foo /tmp/nothing-here.safetensors",
                                f"train {tmp_path}/a.jpg --trigger x", "variation 77")
    lines = printed.splitlines()
    assert lines[0].startswith("error: cannot read the style file /tmp/nothing-here.safetensors")
    assert "'x' has 1 character;" in lines[1]
    assert lines[2] == "error: You have no generation #77; only the one who made it can change it."

    await console.run('imagine "a red apple"')
    printed = await console.run("cancel 1")
    assert printed.count("ancel") == 1 and "Cancelled job #1 (generating \"a red apple\")" in printed
    await console.run('imagine "a green apple"')
    job = driver.claim(("generate",))
    printed = await console.run("cancel 2")
    assert "Stopping job #2" in printed
    assert jobs.finish_job(driver.conn, job.id, "queue-driver", "cancelled")
    await console.run("wait 2")
    everything = await settle(console)
    assert "was cancelled" not in everything  # each cancel printed one message


def test_warnings_reach_the_terminal_as_product_lines_not_log_records(capsys):
    handler = TerminalWarnings()
    logger = logging.getLogger("bot.maintenance")
    logger.addHandler(handler)
    library = logging.getLogger("diffusers.test")
    library.addHandler(handler)
    try:
        logger.warning("Likeness: the server's disk is nearly full (%s free).", "84.0 KiB")
        library.warning("a library's own chatter")
        logging.getLogger("bot.console").error("console command 'x' failed")  # the console says it itself
    finally:
        logger.removeHandler(handler)
        library.removeHandler(handler)
    printed = capsys.readouterr().out  # whatever sys.stdout is when it is logged: the live prompt's patched one
    assert printed == "\u26a0\ufe0f The server's disk is nearly full (84.0 KiB free).\n"


# Item 8: options.
async def test_options_work_as_help_says(parts, tmp_path):
    services, driver, console = parts
    cards = tmp_path / "cards"
    printed = await console.run(f'imagine "a red apple" --count 1 --out {cards}')
    driver.finish_generation(driver.claim(("generate",)))
    await console.run("wait 1")
    assert [p.name for p in cards.iterdir()] == ["gen1-1.png"] and not (tmp_path / "out").exists()

    await console.run('imagine "a red apple"', 'imagine "a pear"')
    printed = await console.run("cancel")
    assert ("error: You have 2 jobs running or waiting: #2 (pictures \"a red apple\", queued); #3 (pictures "
            "\"a pear\", queued). Say which one to cancel, e.g. `cancel 3`.") in printed
    assert {(await services.db.run(jobs.get_job, n)).state for n in (2, 3)} == {"queued"}
    printed = await console.run("cancel 3", "cancel")
    assert "Cancelled job #3" in printed and "Cancelled job #2 (generating \"a red apple\")" in printed

    printed = await console.run("staus", "imagine a cat --sed 3", "as 2 --name Mia", "as 1", "as 2", "admin queue",
                                "as 1", "admin queue")
    assert "unknown command `staus`; did you mean `status`?" in printed
    assert "has no option `--sed`; did you mean `--seed`?" in printed
    assert printed.count("now acting as user 2 (Mia)") == 2
    assert "user 1 (the operator) is an admin: `as 1`" in printed and "LIKENESS_ADMIN_USER_IDS" in printed
    assert printed.rstrip().endswith("No jobs right now.")  # the operator's own `admin queue` works


# Item 10: the demo photos are one person.
async def test_demo_photos_are_one_person_and_the_readme_walkthrough_works(parts, tmp_path):
    services, _, console = parts
    photos = tmp_path / "photos"
    printed = await console.run(f"demo-photos {photos}", f"train {photos}/astronaut-*.jpg --trigger rraj --name Raj",
                                f"photos add rraj {photos}/selfie.jpg")
    assert "4 of 4 photo(s) accepted" in printed and "Training queued as job #1" in printed
    assert "\u2705 photo 1 (selfie.jpg): accepted" in printed and "different person" not in printed
