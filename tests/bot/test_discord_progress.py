"""The job watcher: one bot-owned progress message per job, throttled edits, Discord errors, restarts.

The worker's side is played by QueueDriver through the storage calls the worker uses, so each test decides when
progress appears; the bot reads nothing but the jobs row.
"""

import discord
import pytest

from storage import jobs
from tests.bot.conftest import build_bot, requests_to, start_training, texts
from tests.bot.queue_driver import QueueDriver, png


@pytest.fixture
def driver(bot_settings):
    queue = QueueDriver(bot_settings)
    yield queue
    queue.close()


def job_row(driver: QueueDriver, job_id: int) -> jobs.Job:
    return jobs.get_job(driver.conn, job_id)


async def queued_training(world, driver):
    result = await start_training(world, world.alice)
    assert "queued as job #" in texts(result)
    job = driver.claim(("train",))
    row = job_row(driver, job.id)
    assert row.message_id is not None, "the progress message is posted as soon as the job is queued"
    return job, row.message_id


def message(world, message_id: int) -> discord.Message:
    return next(m for m in world.channel.history() if m.id == message_id)


async def test_progress_message_shows_bar_eta_and_preview_and_is_edited_at_most_every_interval(world, driver):
    job, message_id = await queued_training(world, driver)
    driver.progress(job, 1, 4, preview=png((250, 0, 0)))
    await world.env.advance_time(2.5)  # a watcher pass, but the last edit is younger than the 5 s interval
    assert len(requests_to(world.env, "PATCH", f"/messages/{message_id}")) == 0
    await world.env.advance_time(4)
    shown = message(world, message_id)
    assert "step 1/4" in shown.content and "\u25b0" in shown.content
    assert "<t:" in shown.content and ":R>" in shown.content
    assert len(shown.attachments) == 1 and shown.attachments[0].filename.endswith(".png")
    assert any(c.custom_id == f"likeness:job:{job.id}:cancel" for row in shown.components for c in row.children)
    edits = len(requests_to(world.env, "PATCH", f"/messages/{message_id}"))
    driver.progress(job, 2, 4)
    await world.env.advance_time(2.1)
    assert len(requests_to(world.env, "PATCH", f"/messages/{message_id}")) == edits


async def test_500_and_429_on_edits_are_retried_and_progress_keeps_flowing(world, driver):
    job, message_id = await queued_training(world, driver)
    world.env.inject_error("PATCH", "/channels/*/messages/*", status=500)
    world.env.inject_error("PATCH", "/channels/*/messages/*", status=429, message="You are being rate limited.")
    driver.progress(job, 2, 4)
    await world.env.advance_time(7)  # a pass at 6 s meets the 500 (discord.py's tries are spent): no edit yet
    assert "step 2/4" not in message(world, message_id).content
    await world.env.advance_time(5)  # the next passes meet the 429, then get through
    assert "step 2/4" in message(world, message_id).content
    world.env.inject_error("PATCH", "/channels/*/messages/*", status=503, times=2)
    driver.progress(job, 3, 4)
    await world.env.advance_time(7)
    assert "step 3/4" in message(world, message_id).content
    driver.finish_training(job)
    await world.env.advance_time(3)
    notice = world.channel.last_message
    assert f"<@{world.alice.id}>" in notice.content and "is trained" in notice.content
    assert job_row(driver, job.id).notified


async def test_a_notice_that_cannot_be_delivered_is_retried_later_and_says_it_is_late(world, driver):
    job, _ = await queued_training(world, driver)
    driver.finish_training(job)
    world.env.inject_error("*", "/channels/*/messages*", status=502, times=None)
    await world.env.advance_time(5)
    assert not job_row(driver, job.id).notified  # left for the next pass; the loop is still alive
    world.env.backend.faults.clear()
    await world.env.advance_time(3)
    assert job_row(driver, job.id).notified
    notice = world.channel.last_message
    assert "is trained" in notice.content and "Delivered late" in notice.content


# SimCord answers at discord.py's HTTPClient.request, below its retry loop: one injected 5xx or 429 is what reaches
# the bot in production after discord.py's own tries (up to 5 per request) were spent.
async def test_a_failure_discord_py_already_retried_waits_for_the_next_pass(world, driver):
    job, _ = await queued_training(world, driver)
    posts_path = f"/channels/{world.channel.id}/messages"
    posts_before = len(requests_to(world.env, "POST", posts_path))
    world.env.inject_error("POST", posts_path, status=502)
    driver.finish_training(job)
    await world.env.advance_time(8)
    assert len(requests_to(world.env, "POST", posts_path)) - posts_before == 2  # no second try in the same pass
    notice = world.channel.last_message
    assert "is trained" in notice.content and "Delivered late" in notice.content
    assert job_row(driver, job.id).notified


async def test_a_503_which_discord_py_does_not_retry_is_retried_at_once(world, driver):
    job, _ = await queued_training(world, driver)
    posts_path = f"/channels/{world.channel.id}/messages"
    posts_before = len(requests_to(world.env, "POST", posts_path))
    world.env.inject_error("POST", posts_path, status=503)
    driver.finish_training(job)
    await world.env.advance_time(3)
    assert len(requests_to(world.env, "POST", posts_path)) - posts_before == 2
    notice = world.channel.last_message
    assert "is trained" in notice.content and "Delivered late" not in notice.content
    assert job_row(driver, job.id).notified


async def test_finished_notice_mentions_only_the_owner(world, driver):
    job, _ = await queued_training(world, driver)
    driver.finish_training(job)
    await world.env.advance_time(3)
    posts = [r for r in requests_to(world.env, "POST", f"/channels/{world.channel.id}/messages")
             if r.json and "is trained" in (r.json.get("content") or "")]
    assert len(posts) == 1
    mentions = posts[0].json["allowed_mentions"]
    assert mentions.get("parse") == [] and [int(u) for u in mentions.get("users")] == [world.alice.id]
    assert mentions.get("roles") in (None, [])


async def test_failure_is_reported_with_the_workers_sentence(world, driver):
    job, message_id = await queued_training(world, driver)
    driver.fail(job, "The GPU ran out of memory; turn on NF4 or lower the resolution.")
    await world.env.advance_time(3)
    assert "failed: The GPU ran out of memory" in message(world, message_id).content
    assert "ran out of memory" in world.channel.last_message.content
    assert job_row(driver, job.id).notified


async def test_restart_reconciles_running_and_finished_jobs(world, driver, bot_settings, bot_services):
    first, first_message = await queued_training(world, driver)
    driver.progress(first, 3, 4)
    await world.env.restart_bot(build_bot(bot_settings, bot_services))  # its first pass re-renders running jobs
    assert "step 3/4" in message(world, first_message).content
    assert "restarted" in message(world, first_message).content

    mods = world.guild.create_role("mods", permissions=discord.Permissions(manage_messages=True))
    moderator = world.guild.add_member(world.env.create_user("mod"), roles=[mods])
    await moderator.delete(message(world, first_message))
    await world.env.restart_bot(build_bot(bot_settings, bot_services))
    await world.env.advance_time(0.5)
    replacement = job_row(driver, first.id).message_id
    assert replacement != first_message and "step 3/4" in message(world, replacement).content

    driver.finish_training(first)  # finishes while the bot is "down"
    await world.env.restart_bot(build_bot(bot_settings, bot_services))
    await world.env.advance_time(0.5)
    assert "is trained" in world.channel.last_message.content
    assert job_row(driver, first.id).notified


async def test_cancel_button_is_owner_only_and_cancels(world, driver):
    result = await start_training(world, world.alice)
    job_id = int(texts(result).split("job #")[1].split(" ")[0])
    progress = message(world, job_row(driver, job_id).message_id)
    refused = await world.bob.click(progress, custom_id=f"likeness:job:{job_id}:cancel")
    assert refused.acknowledged and refused.ephemeral and "Only the person" in texts(refused)
    assert job_row(driver, job_id).state == "queued"
    done = await world.alice.click(progress, custom_id=f"likeness:job:{job_id}:cancel")
    assert done.acknowledged and "Cancelled job" in texts(done)
    assert job_row(driver, job_id).state == "cancelled"
    await world.env.advance_time(3)
    assert "Cancelled." in message(world, progress.id).content


async def test_when_the_channel_is_out_of_reach_progress_and_results_go_to_the_owners_dm(world, driver):
    world.env.inject_error("POST", f"/channels/{world.channel.id}/messages", status=403, code=50001,
                           message="Missing Access", times=None)
    result = await start_training(world, world.alice)
    assert "queued as job #" in texts(result)
    job = driver.claim(("train",))
    dm = world.alice.user.dm_channel
    assert job_row(driver, job.id).channel_id == dm.id
    assert f"job #{job.id}" in dm.last_message.content
    driver.finish_training(job)
    await world.env.advance_time(3)
    assert "is trained" in dm.last_message.content and job_row(driver, job.id).notified
