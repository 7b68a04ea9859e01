"""/export and /forget through SimCord."""

import io
import sqlite3
import zipfile

import pytest

from storage.files import user_root
from tests.bot.conftest import start_training, texts
from tests.bot.queue_driver import QueueDriver

TABLES_WITH_USERS = {
    "users": "id", "subjects": "owner_id", "subject_groups": "owner_id", "adapters": "owner_id",
    "grants": "user_id", "jobs": "user_id", "generations": "user_id", "exports": "user_id",
}


@pytest.fixture
def driver(bot_settings):
    queue = QueueDriver(bot_settings)
    yield queue
    queue.close()


async def trained_and_imagined(world, driver, adapter_size: int = 0):
    await start_training(world, world.alice)
    driver.finish_training(driver.claim(("train",)), size=adapter_size)
    await world.env.advance_time(3)
    await world.alice.slash(world.channel, "imagine", prompt="a photo of rraj person", count=1)
    driver.finish_generation(driver.claim(("generate",)))
    await world.env.advance_time(3)


async def test_export_is_sent_by_dm_as_a_zip(world, driver):
    await trained_and_imagined(world, driver)
    result = await world.alice.slash(world.channel, "export", subject="rraj")
    assert result.ephemeral and "sent to you by DM" in texts(result)
    dm = world.alice.user.dm_channel.last_message
    assert dm is not None and len(dm.attachments) == 1
    attachment = dm.attachments[0]
    assert attachment.filename == "likeness-rraj-v1.zip"
    names = zipfile.ZipFile(io.BytesIO(await attachment.read())).namelist()
    assert "pytorch_lora_weights.safetensors" in names

    stranger = await world.bob.slash(world.channel, "export", subject="rraj")
    assert stranger.ephemeral and "DM" not in texts(stranger)


@pytest.mark.bot_settings(max_upload_bytes=300_000)
async def test_export_too_big_for_discord_is_explained(world, driver):
    await trained_and_imagined(world, driver, adapter_size=400_000)
    result = await world.alice.slash(world.channel, "export", subject="rraj")
    assert "upload limit" in texts(result)
    assert world.alice.user.dm_channel.last_message is None


def rows_mentioning(conn: sqlite3.Connection, user_id: int) -> dict[str, int]:
    found = {}
    for table, column in TABLES_WITH_USERS.items():
        count = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (user_id,)).fetchone()[0]
        if count:
            found[table] = count
    return found


async def test_forget_asks_first_then_leaves_no_rows_and_no_files(world, driver):
    await trained_and_imagined(world, driver)
    await world.alice.slash(world.channel, "share", subject="rraj", user=world.bob)
    await world.bob.slash(world.channel, "imagine", prompt="a photo of rraj person", count=1)
    driver.finish_generation(driver.claim(("generate",)))  # bob's picture shows alice's likeness
    await world.env.advance_time(3)
    assert rows_mentioning(driver.conn, world.alice.id)
    assert driver.store.list_files(user_root(world.alice.id))

    asked = await world.alice.slash(world.channel, "forget")
    assert asked.ephemeral and "cannot be undone" in texts(asked)
    kept = await world.alice.click(asked.response, label="Keep my data")
    assert kept.acknowledged and rows_mentioning(driver.conn, world.alice.id)

    asked = await world.alice.slash(world.channel, "forget")
    done = await world.alice.click(asked.response, label="Delete everything")
    assert done.acknowledged
    report = done.response.content if done.response else asked.response.content
    assert "Deleted 1 subject(s), 2 photo(s), 1 adapter(s), 2 generation(s) and 1 share(s)" in report  # with bob's
    assert rows_mentioning(driver.conn, world.alice.id) == {}
    assert driver.store.list_files(user_root(world.alice.id)) == []
    bob_generations = driver.conn.execute("SELECT count(*) FROM generations WHERE user_id = ?",
                                          (world.bob.id,)).fetchone()[0]
    assert bob_generations == 0  # it showed alice's likeness, so it went too

    again = await world.alice.slash(world.channel, "imagine", prompt="a photo of rraj person")
    assert "queued" not in texts(again)
