"""Discord platform rules: where commands work, sync, short private errors, never a traceback, autocomplete."""

import pytest

from bot.replies import GENERIC_ERROR
from tests.bot.conftest import GUILD_ID, start_training, texts
from tests.bot.queue_driver import QueueDriver

EVERY_COMMAND = {"train", "train-family", "photos", "imagine", "headshots", "card", "share", "unshare", "subjects",
                 "status", "cancel", "export", "forget", "admin"}


async def test_commands_are_synced_to_the_allowed_guild_and_declare_where_they_work(world):
    registered = world.env.backend.commands
    assert not registered.get(None)  # nothing global unless asked
    by_name = {c["name"]: c for c in registered[GUILD_ID].values()}
    assert set(by_name) == EVERY_COMMAND
    for command in by_name.values():
        assert sorted(command["contexts"]) == [0, 1, 2]  # guild, bot DM, private channels (group DMs)
        assert sorted(command["integration_types"]) == [0, 1]  # installed to a guild, installed by a user


@pytest.mark.bot_settings(sync_commands_globally=True)
async def test_global_sync_works_in_dms(simcord_env):
    assert {c["name"] for c in simcord_env.backend.commands[None].values()} == EVERY_COMMAND
    carol = simcord_env.create_user("carol")
    result = await carol.slash("status")
    assert result.acknowledged and "No jobs" in texts(result)


@pytest.mark.bot_settings(sync_commands_globally=True)
async def test_a_guild_the_host_did_not_allow_is_refused_politely(simcord_env):
    elsewhere = simcord_env.create_guild("Elsewhere")
    channel = elsewhere.create_text_channel("general")
    dave = elsewhere.add_member(simcord_env.create_user("dave"))
    result = await dave.slash(channel, "status")
    assert result.acknowledged and result.ephemeral and "not enabled in this server" in texts(result)


@pytest.mark.parametrize(("options", "expected"), [
    ({"count": 1000}, "Count must be between 1 and 4"),
    ({"steps": -3}, "Steps must be between"),
    ({"seed": "123456789012345678901234567890"}, "The seed must be a whole number"),
    ({"guidance": 1e9}, "Guidance must be between"),
])
async def test_absurd_options_get_a_specific_private_answer(world, options, expected):
    result = await world.alice.slash(world.channel, "imagine", prompt="a red apple", **options)
    assert result.acknowledged and result.ephemeral
    assert expected in texts(result) and "Traceback" not in texts(result)


async def test_an_unexpected_error_is_one_plain_sentence_and_logged(world, bot_services, monkeypatch, caplog):
    async def broken(req):
        raise RuntimeError("/secret/path/on/the/host exploded")

    monkeypatch.setattr(bot_services.jobs, "status", broken)
    result = await world.alice.slash(world.channel, "status")
    assert result.acknowledged and result.ephemeral
    assert texts(result) == GENERIC_ERROR
    assert any("exploded" in str(e) for e in world.env.errors)  # the host sees it; the user does not
    assert "secret" not in texts(result)


async def test_autocomplete_offers_usable_triggers_styles_and_class_nouns(world, bot_settings):
    driver = QueueDriver(bot_settings)
    try:
        await start_training(world, world.alice)
        driver.finish_training(driver.claim(("train",)))
    finally:
        driver.close()
    choices = await world.alice.autocomplete(world.channel, "imagine", "prompt", "a photo of rr")
    assert "a photo of rraj person" in [c["value"] for c in choices]
    bobs = await world.bob.autocomplete(world.channel, "imagine", "prompt", "a photo of rr")
    assert bobs == [{"name": "a photo of rr", "value": "a photo of rr"}]  # only his own text: nothing of alice's
    nouns = await world.alice.autocomplete(world.channel, "train", "class_noun", "w")
    assert [c["value"] for c in nouns] == ["woman", "w"]
    subjects = await world.alice.autocomplete(world.channel, "share", "subject", "")
    assert [c["value"] for c in subjects] == ["rraj"]
    assert await world.alice.autocomplete(world.channel, "imagine", "style", "") == []


async def test_status_and_cancel_show_my_jobs(world):
    await start_training(world, world.alice)
    status = await world.alice.slash(world.channel, "status")
    assert "Training `rraj`: queued (next in line)" in texts(status)
    assert "No jobs" in texts(await world.bob.slash(world.channel, "status"))
    nothing = await world.bob.slash(world.channel, "cancel")
    assert nothing.ephemeral and "Cancelled" not in texts(nothing)
    cancelled = await world.alice.slash(world.channel, "cancel")
    assert "Cancelled job #1" in texts(cancelled)


async def test_admin_commands_are_refused_to_non_admins_and_limits_are_shown(world):
    refused = await world.alice.slash(world.channel, "admin queue")
    assert refused.ephemeral and refused.acknowledged and "#" not in texts(refused)
    limits = await world.alice.slash(world.channel, "admin limits")
    assert "Training jobs at a time: 1" in texts(limits)


async def test_subjects_lists_mine_and_shared(world, bot_settings):
    await start_training(world, world.alice)
    mine = await world.alice.slash(world.channel, "subjects")
    assert "`rraj` person" in texts(mine)
    await world.alice.slash(world.channel, "share", subject="rraj", user=world.bob)
    shared = texts(await world.bob.slash(world.channel, "subjects"))
    assert shared.index("Shared with you") < shared.index("`rraj`")


async def test_train_family_with_no_such_group_says_so(world):
    result = await world.alice.slash(world.channel, "train-family", family="smiths")
    assert result.acknowledged and result.ephemeral and "queued" not in texts(result)
    assert texts(result)
