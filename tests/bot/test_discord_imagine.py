"""/imagine end to end on the bot side: consent, the result message with its grid and buttons, the buttons after a
restart, deletion, oversized images, and prompts that try to ping people."""

import discord
import pytest

from storage import generations, jobs
from tests.bot.conftest import build_bot, start_training, texts
from tests.bot.queue_driver import QueueDriver

PROMPT = "a photo of rraj person as a Van Gogh painting"


@pytest.fixture
def driver(bot_settings):
    queue = QueueDriver(bot_settings)
    yield queue
    queue.close()


async def trained(world, driver, actor=None, trigger="rraj"):
    await start_training(world, actor or world.alice, trigger=trigger)
    job = driver.claim(("train",))
    driver.finish_training(job)
    await world.env.advance_time(3)
    return job


def job_id_in(text: str) -> int:
    return int(text.split("job #")[1].split(" ")[0])


async def imagined(world, driver, actor, prompt=PROMPT, **options):
    result = await actor.slash(world.channel, "imagine", prompt=prompt, **options)
    assert result.acknowledged and result.ephemeral, texts(result)
    job = driver.claim(("generate",))
    driver.finish_generation(job)
    await world.env.advance_time(3)
    return result, job


def buttons(message: discord.Message) -> dict[str, str]:
    return {c.label: c.custom_id for row in message.components for c in row.children}


async def test_imagine_with_the_trigger_returns_images_with_buttons(world, driver):
    await trained(world, driver)
    result, job = await imagined(world, driver, world.alice, count=2, seed="7")
    assert "queued as job #" in texts(result) and "seed 7" in texts(result)
    posted = world.channel.last_message
    assert f"<@{world.alice.id}>" in posted.content and "seed 7" in posted.content
    assert len(posted.attachments) == 3  # the grid and both images
    assert all(a.filename.endswith(".png") for a in posted.attachments)
    generation_id = job.payload["generation_id"]
    assert set(buttons(posted)) == {"U1", "U2", "V1", "V2", "Re-roll", "Delete"}
    assert buttons(posted)["Re-roll"] == f"likeness:gen:{generation_id}:reroll"
    row = generations.get_generation(driver.conn, generation_id)
    assert row.message_id == posted.id and row.channel_id == world.channel.id
    assert jobs.get_job(driver.conn, job.id).notified


async def test_someone_else_is_refused_until_the_owner_shares(world, driver):
    await trained(world, driver)
    refused = await world.bob.slash(world.channel, "imagine", prompt=PROMPT)
    assert refused.acknowledged and refused.ephemeral
    assert "queued" not in texts(refused) and "rraj" in texts(refused)
    assert jobs.count_active(driver.conn, world.bob.id, "generate") == 0

    shared = await world.alice.slash(world.channel, "share", subject="rraj", user=world.bob)
    assert shared.acknowledged and "can now use" in texts(shared)
    allowed = await world.bob.slash(world.channel, "imagine", prompt=PROMPT)
    assert "queued as job #" in texts(allowed)

    unshared = await world.alice.slash(world.channel, "unshare", subject="rraj", user=world.bob)
    assert "no longer" in texts(unshared)
    again = await world.bob.slash(world.channel, "imagine", prompt=PROMPT)
    assert "queued" not in texts(again)


async def test_share_with_the_whole_server(world, driver):
    await trained(world, driver)
    shared = await world.alice.slash(world.channel, "share", subject="rraj", server=True)
    assert "everyone in this server" in texts(shared)
    allowed = await world.bob.slash(world.channel, "imagine", prompt=PROMPT)
    assert "queued as job #" in texts(allowed)
    neither = await world.alice.slash(world.channel, "share", subject="rraj")
    assert "Pick either a user or this server" in texts(neither)


async def test_buttons_work_after_a_restart_and_only_for_the_owner(world, driver, bot_settings, bot_services):
    await trained(world, driver)
    _, job = await imagined(world, driver, world.alice, count=2)
    posted = world.channel.last_message
    await world.env.restart_bot(build_bot(bot_settings, bot_services))

    stranger = await world.bob.click(posted, label="Re-roll")
    assert stranger.acknowledged and stranger.ephemeral and "Only the person" in texts(stranger)

    reroll = await world.alice.click(posted, label="Re-roll")
    assert reroll.acknowledged and "Re-roll queued as job #" in texts(reroll)
    upscale = await world.alice.click(posted, label="U2")
    assert "Upscale queued as job #" in texts(upscale)
    queued = [generations.get_generation(driver.conn, j.payload["generation_id"])
              for j in jobs.active_jobs(driver.conn, world.alice.id)]
    assert sorted(g.kind for g in queued) == ["reroll", "upscale"]
    assert {g.parent_id for g in queued} == {job.payload["generation_id"]}

    deleted = await world.alice.click(posted, label="Delete")
    assert deleted.acknowledged and "Deleted" in texts(deleted)
    assert generations.get_generation(driver.conn, job.payload["generation_id"]) is None
    assert all(m.id != posted.id for m in world.channel.history())


async def test_variation_of_a_single_image(world, driver):
    await trained(world, driver)
    await imagined(world, driver, world.alice, count=1)
    posted = world.channel.last_message
    assert set(buttons(posted)) == {"Upscale", "Variation", "Re-roll", "Delete"}
    assert len(posted.attachments) == 1
    variation = await world.alice.click(posted, label="Variation")
    assert "Variation queued" in texts(variation)


@pytest.mark.bot_settings(max_upload_bytes=300_000)
async def test_images_over_the_upload_limit_are_sent_as_jpeg(world, driver):
    await trained(world, driver)
    await world.alice.slash(world.channel, "imagine", prompt=PROMPT, count=1)
    job = driver.claim(("generate",))
    driver.finish_generation(job, big=True)
    await world.env.advance_time(3)
    posted = world.channel.last_message
    assert len(posted.attachments) == 1
    attachment = posted.attachments[0]
    assert attachment.filename.endswith(".jpg") and attachment.size <= 300_000


async def test_prompts_never_ping_anyone(world, driver):
    await trained(world, driver)
    role = world.guild.create_role("everyone-else")
    prompt = f"{PROMPT} @everyone @here <@&{role.id}> <@{world.bob.id}> **loud** ||x||"
    result, _ = await imagined(world, driver, world.alice, prompt=prompt)
    assert result.acknowledged
    with_user_text = 0
    for request in world.env.http_requests:
        if request.method not in ("POST", "PATCH") or not isinstance(request.json, dict):
            continue
        body = request.json.get("data") if "/callback" in request.path else request.json
        if not isinstance(body, dict) or not body.get("content"):
            continue
        mentions = body.get("allowed_mentions")  # every message the bot sends turns mentions off
        assert mentions is not None and mentions.get("parse") == [], request
        assert not mentions.get("roles") and not mentions.get("replied_user"), request
        assert [int(u) for u in mentions.get("users") or []] in ([], [world.alice.id]), request
        with_user_text += "everyone" in body["content"]
    assert with_user_text >= 2  # the progress message and the result carry the prompt
    assert world.channel.last_message.mention_everyone is False


async def test_headshots_and_cards_are_queued_with_the_subjects_adapter(world, driver):
    await trained(world, driver)
    headshots = await world.alice.slash(world.channel, "headshots", count=3)
    assert headshots.ephemeral and "Headshots queued as job #" in texts(headshots) and "`rraj`" in texts(headshots)
    card = await world.alice.slash(world.channel, "card", prompt="rraj person by a fireplace",
                                   greeting="Happy holidays from the Rajs!", layout="landscape")
    assert "Card queued as job #" in texts(card)
    kinds = sorted(generations.get_generation(driver.conn, j.payload["generation_id"]).kind
                   for j in jobs.active_jobs(driver.conn, world.alice.id))
    assert kinds == ["card", "headshots"]
    empty = await world.alice.slash(world.channel, "card", prompt="rraj person", greeting="   ")
    assert "queued" not in texts(empty)
