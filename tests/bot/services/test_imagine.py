"""/imagine: trigger resolution with consent, composition, validation, limits, and the queued rows."""

from __future__ import annotations

import pytest

from bot.services import ImagineOptions
from storage import generations, jobs
from tests.bot.services.conftest import ADMIN, CHANNEL, GUILD, FakeClock, add_subject, give_adapter, refused, requester

ALICE, BOB, CAROL = 101, 202, 303
UNKNOWN = "I don't know a trigger word `{}` that you can use. Check /subjects for yours and those shared with you."


async def trained(services, owner: int, trigger: str, **extra):
    subject = await services.db.run(add_subject, owner, trigger, **extra)
    adapter = await services.db.run(give_adapter, services.store, subject)
    return subject, adapter


async def imagine(services, user: int, prompt: str, guild: int | None = GUILD, **options):
    return await services.imagine.imagine(requester(user, guild), ImagineOptions(prompt=prompt, **options))


async def test_own_subject_resolves_to_its_newest_adapter_in_one_queued_generation(services):
    subject, _old = await trained(services, ALICE, "rraj")
    newer = await services.db.run(give_adapter, services.store, subject)
    queued = await imagine(services, ALICE, "a photo of RRAJ person as a Van Gogh painting", seed="12345")

    assert queued.subjects == ("rraj",) and queued.seed == 12345 and queued.position == 1
    generation = await services.db.run(generations.get_generation, queued.generation_id)
    assert generation.prompt == "a photo of rraj person as a Van Gogh painting"
    assert generation.kind == "imagine" and generation.seed == 12345 and generation.subject_ids == (subject.id,)
    assert generation.adapters == [{"kind": "subject", "subject_id": subject.id, "adapter_id": newer.id,
                                    "trigger": "rraj", "weight": 1.0}]
    assert set(generation.params) >= {"width", "height", "steps", "guidance", "scheduler", "count", "style",
                                      "strength", "source_index", "scale", "headshot_prompts", "greeting",
                                      "layout", "aspect"}
    assert generation.params["count"] == 4 and generation.params["scheduler"] == "pndm"
    assert generation.job_id == queued.job_id and generation.channel_id == CHANNEL
    job = await services.db.run(jobs.get_job, queued.job_id)
    assert job.kind == "generate" and job.payload == {"generation_id": generation.id} and job.user_id == ALICE


async def test_random_seed_is_reported_and_is_32_bit_unsigned(services):
    await trained(services, ALICE, "rraj")
    queued = await imagine(services, ALICE, "rraj person on a beach")
    generation = await services.db.run(generations.get_generation, queued.generation_id)
    assert 0 <= queued.seed < 2**32 and generation.seed == queued.seed


async def test_someone_elses_private_subject_is_refused_like_an_unknown_word_until_shared(services):
    await trained(services, BOB, "bbobz")
    private = await refused(imagine(services, ALICE, "bbobz person skiing"))
    unknown = await refused(imagine(services, ALICE, "zqxv person skiing"))
    assert private.message == UNKNOWN.format("bbobz")
    assert unknown.message == UNKNOWN.format("zqxv")
    assert private.code == unknown.code == "unknown_trigger"
    assert await services.db.run(jobs.active_jobs) == []
    # Without a class noun, someone else's private trigger is plain text, exactly like a word nobody uses:
    # the outcome must not depend on whether a private subject exists.
    private_word = await imagine(services, ALICE, "bbobz skiing", seed=1)
    unknown_word = await imagine(services, ALICE, "zqxv skiing", seed=1)
    assert private_word.subjects == unknown_word.subjects == ()
    generation = await services.db.run(generations.get_generation, private_word.generation_id)
    assert generation.adapters == [] and generation.subject_ids == ()

    await services.sharing.share(requester(BOB), "bbobz", user_id=ALICE)
    queued = await imagine(services, ALICE, "bbobz person skiing")
    assert queued.subjects == ("bbobz",)


async def test_a_guild_grant_works_only_in_that_guild(services):
    await trained(services, BOB, "bbobz")
    await services.sharing.share(requester(BOB), "bbobz", guild_id=GUILD)
    assert (await imagine(services, CAROL, "bbobz person", guild=GUILD)).subjects == ("bbobz",)
    for elsewhere in (GUILD + 1, None):
        error = await refused(imagine(services, CAROL, "bbobz person", guild=elsewhere))
        assert error.message == UNKNOWN.format("bbobz")


async def test_ordinary_rare_words_are_not_taken_for_triggers(services):
    await trained(services, ALICE, "rraj")
    queued = await imagine(services, ALICE, "rraj person, bokeh, artstation, by Rutkowski")
    assert queued.subjects == ("rraj",)


async def test_several_people_keep_prompt_order_and_look_alikes_are_rewritten(services):
    await trained(services, ALICE, "rraj")
    await trained(services, BOB, "bbobz")
    await services.sharing.share(requester(BOB), "bbobz", user_id=ALICE)
    queued = await imagine(services, ALICE, "bbobz man and rr\u0430j person and bbobz man at a party")
    assert queued.subjects == ("bbobz", "rraj")
    generation = await services.db.run(generations.get_generation, queued.generation_id)
    assert generation.prompt == "bbobz man and rraj person and bbobz man at a party"
    assert [a["trigger"] for a in generation.adapters] == ["bbobz", "rraj"]


async def test_untrained_and_training_subjects_say_so(services):
    subject = await services.db.run(add_subject, ALICE, "rraj")
    error = await refused(imagine(services, ALICE, "rraj person"))
    assert error.code == "not_trained" and "not trained yet" in error.message
    await services.db.run(lambda conn: jobs.enqueue_job(conn, "train", {"subject_ids": [subject.id]}, user_id=ALICE))
    error = await refused(imagine(services, ALICE, "rraj person"))
    assert error.code == "still_training"


async def test_a_style_is_composed_with_its_weight(services):
    await trained(services, ALICE, "rraj")
    style = await services.db.run(lambda conn: generations.add_style(
        conn, name="pixel-art", family="tiny-sd15", path="styles/" + "ab" * 32 + ".safetensors", sha256="ab" * 32,
        weight=0.6, added_by=None))
    queued = await imagine(services, ALICE, "rraj person", style="Pixel-Art")
    generation = await services.db.run(generations.get_generation, queued.generation_id)
    assert generation.adapters[-1] == {"kind": "style", "style_id": style.id, "name": "pixel-art", "weight": 0.6}
    assert generation.params["style"] == "pixel-art" and queued.style == "pixel-art"
    error = await refused(imagine(services, ALICE, "rraj person", style="watercolour"))
    assert error.code == "unknown_style" and "watercolour" in error.message
    assert await services.imagine.style_choices("pix") == ["pixel-art"]


@pytest.mark.parametrize("prompt, code, words", [
    ("", "empty_prompt", "empty"),
    ("   \n\t ", "empty_prompt", "empty"),
    ("\u200b\u200c\u200d\ufeff" * 10, "empty_prompt", "invisible"),
    ("a" * 5000, "prompt_too_long", "5000 characters"),
    ("a portrait with GORE everywhere", "blocked_prompt", "gore"),
])
async def test_bad_prompts_get_specific_messages(services, prompt, code, words):
    error = await refused(imagine(services, ALICE, prompt))
    assert error.code == code and words in error.message


async def test_the_blocklist_matches_whole_words_only(services):
    queued = await imagine(services, ALICE, "gorevalley landscape with a nudes-free gorey sky")
    assert queued.subjects == ()
    assert (await refused(imagine(services, ALICE, "some (nude) statue"))).code == "blocked_prompt"


@pytest.mark.parametrize("options, code, words", [
    ({"steps": -5}, "bad_steps", "between 1 and 150"),
    ({"steps": "ten"}, "bad_option", "whole number"),
    ({"count": 1000}, "bad_count", "between 1 and 4"),
    ({"count": 0}, "bad_count", "between 1 and 4"),
    ({"seed": 2**64}, "bad_seed", "0 to 4294967295"),
    ({"seed": 2**32}, "bad_seed", "0 to"),
    ({"seed": -1}, "bad_seed", "0 to"),
    ({"guidance": 100}, "bad_guidance", "between 0 and 30"),
    ({"guidance": "nan"}, "bad_option", "number"),
    ({"scheduler": "karras-magic"}, "bad_scheduler", "DPM++ 2M"),
    ({"aspect": "panorama"}, "bad_aspect", "square, portrait, landscape, tall, wide"),
    ({"negative_prompt": "x" * 1001}, "prompt_too_long", "negative prompt"),
])
async def test_bad_options_get_specific_messages_and_queue_nothing(services, options, code, words):
    error = await refused(imagine(services, ALICE, "a lighthouse", **options))
    assert error.code == code and words in error.message
    assert await services.db.run(jobs.active_jobs) == []


async def test_friendly_scheduler_names_and_aspect_presets(services):
    wide = await imagine(services, ALICE, "a lighthouse", scheduler="Euler a", aspect="wide", count=1, steps="7")
    generation = await services.db.run(generations.get_generation, wide.generation_id)
    assert generation.params["scheduler"] == "euler_a" and generation.params["steps"] == 7
    assert wide.width > wide.height and wide.width % 16 == 0 and wide.height % 16 == 0
    dpm = await imagine(services, ALICE, "a lighthouse", scheduler="DPM++ 2M", guidance="6.5")
    generation = await services.db.run(generations.get_generation, dpm.generation_id)
    assert generation.params["scheduler"] == "dpmpp_2m" and generation.params["guidance"] == 6.5


async def test_queued_generation_limit_applies_but_not_to_admins(build_services):
    services = await build_services(max_queued_generations_per_user=2)
    for _ in range(2):
        await imagine(services, ALICE, "a lighthouse")
    error = await refused(imagine(services, ALICE, "a lighthouse"))
    assert error.code == "too_many_queued" and "limit is 2" in error.message
    for _ in range(3):
        await imagine(services, ADMIN, "a lighthouse")
    assert len(await services.db.run(jobs.active_jobs, ADMIN)) == 3


async def test_cooldown_between_requests_admins_exempt_and_failures_do_not_count(build_services):
    clock = FakeClock()
    services = await build_services(generation_cooldown_s=10, clock=clock)
    await imagine(services, ALICE, "a lighthouse")
    error = await refused(imagine(services, ALICE, "a lighthouse"))
    assert error.code == "cooldown" and "10 s" in error.message
    clock.advance(10.5)
    assert (await refused(imagine(services, ALICE, "zqxv person"))).code == "unknown_trigger"
    await imagine(services, ALICE, "a lighthouse")  # the refused request did not start a new cooldown
    await imagine(services, ADMIN, "a lighthouse")
    await imagine(services, ADMIN, "a lighthouse")
