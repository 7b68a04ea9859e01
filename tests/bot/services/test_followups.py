"""Re-roll, variation, upscale, headshots, cards, delete and autocomplete."""

from __future__ import annotations

import pytest

from bot.services import ImagineOptions
from bot.services.headshots import HEADSHOT_PROMPTS
from storage import generations, jobs
from storage.files import generation_root
from tests.bot.services.conftest import GUILD, add_subject, give_adapter, refused, requester

ALICE, BOB = 101, 202


async def trained(services, owner: int, trigger: str):
    subject = await services.db.run(add_subject, owner, trigger)
    await services.db.run(give_adapter, services.store, subject)
    return subject


async def finished(services, queued, owner: int = ALICE, pictures: int = 2) -> list[str]:
    """What the worker leaves: output files under the generation's folder, listed on the row."""
    root = generation_root(owner, queued.generation_id)
    outputs = [services.store.write_bytes(f"{root}/{n}.png", b"png") for n in range(pictures)]
    await services.db.run(generations.set_outputs, queued.generation_id, outputs)
    return outputs


@pytest.fixture
async def made(services):
    """Alice's finished 2-picture generation of her own subject."""
    await trained(services, ALICE, "rraj")
    queued = await services.imagine.imagine(
        requester(ALICE), ImagineOptions("a photo of rraj person", seed=77, count=2, steps=9, aspect="portrait")
    )
    await finished(services, queued)
    return queued


async def stored(services, queued):
    return await services.db.run(generations.get_generation, queued.generation_id)


async def test_reroll_copies_everything_but_the_seed(services, made):
    parent = await stored(services, made)
    child = await stored(services, await services.imagine.reroll(requester(ALICE), made.generation_id))
    assert child.kind == "reroll" and child.parent_id == parent.id and child.seed != parent.seed
    assert (child.prompt, child.params, child.adapters, child.subject_ids) == (
        parent.prompt, parent.params, parent.adapters, parent.subject_ids)


async def test_variation_is_img2img_of_one_picture_with_a_new_seed(services, made):
    parent = await stored(services, made)
    child = await stored(services, await services.imagine.variation(requester(ALICE), made.generation_id, 2))
    assert child.kind == "variation" and child.parent_id == parent.id
    assert child.params["source_index"] == 1 and 0 < child.params["strength"] < 1
    assert child.params["steps"] == 9 and child.params["count"] == parent.params["count"]
    assert child.adapters == parent.adapters


async def test_upscale_doubles_one_picture_and_cannot_be_repeated(services, made):
    parent = await stored(services, made)
    queued = await services.imagine.upscale(requester(ALICE), made.generation_id, 1)
    child = await stored(services, queued)
    assert child.kind == "upscale" and child.params["scale"] == 2.0 and child.params["source_index"] == 0
    assert child.params["count"] == 1 and 0 < child.params["strength"] < 1 and child.seed == parent.seed
    await finished(services, queued, pictures=1)
    error = await refused(services.imagine.upscale(requester(ALICE), queued.generation_id, 1))
    assert error.code == "already_upscaled"


async def test_followups_check_owner_index_and_that_the_parent_finished(services, made):
    assert (await refused(services.imagine.reroll(requester(BOB), made.generation_id))).code == "no_generation"
    assert (await refused(services.imagine.variation(requester(ALICE), made.generation_id, 3))).code == "bad_index"
    assert (await refused(services.imagine.upscale(requester(ALICE), 10**30, 1))).code == "bad_id"
    pending = await services.imagine.imagine(requester(ALICE), ImagineOptions("rraj person"))
    error = await refused(services.imagine.variation(requester(ALICE), pending.generation_id, 1))
    assert error.code == "not_finished"


async def test_a_revoked_grant_blocks_a_reroll(services):
    await trained(services, BOB, "bbobz")
    await services.sharing.share(requester(BOB), "bbobz", user_id=ALICE)
    queued = await services.imagine.imagine(requester(ALICE), ImagineOptions("bbobz man"))
    await services.sharing.unshare(requester(BOB), "bbobz", user_id=ALICE)
    error = await refused(services.imagine.reroll(requester(ALICE), queued.generation_id))
    assert error.code == "not_allowed"
    assert len(await services.db.run(jobs.active_jobs, ALICE)) == 1  # only the original


async def test_headshots_use_my_subject_and_the_curated_prompts(services):
    await trained(services, ALICE, "rraj")
    queued = await services.imagine.headshots(requester(ALICE), None, 3)
    generation = await stored(services, queued)
    assert generation.kind == "headshots" and queued.subjects == ("rraj",)
    assert queued.count == 3  # the reply's "3 image(s)": one per headshot prompt
    prompts = generation.params["headshot_prompts"]
    assert len(prompts) == 3 and all("rraj person" in p for p in prompts)
    assert prompts == [p.replace("{subject}", "rraj person") for p in HEADSHOT_PROMPTS[:3]]
    assert generation.params["height"] > generation.params["width"]  # portrait
    assert (await refused(services.imagine.headshots(requester(ALICE), None, 9))).code == "bad_count"


async def test_headshots_need_a_choice_among_several_and_respect_consent(services):
    await trained(services, ALICE, "rraj")
    await trained(services, ALICE, "zqmira")
    assert (await refused(services.imagine.headshots(requester(ALICE)))).code == "choose_subject"
    assert (await services.imagine.headshots(requester(ALICE), "zqmira")).subjects == ("zqmira",)
    await trained(services, BOB, "bbobz")
    error = await refused(services.imagine.headshots(requester(ALICE), "bbobz"))
    assert error.code == "unknown_trigger"
    assert (await refused(services.imagine.headshots(requester(BOB + 1)))).code == "no_subject"


async def test_cards_validate_greeting_and_layout_and_name_several_people(services):
    await trained(services, ALICE, "rraj")
    await trained(services, ALICE, "zqmira")
    queued = await services.imagine.card(
        requester(ALICE), "zqmira woman and rraj person by a fireplace", "Happy holidays!\nfrom the Rajs\u200b",
        "landscape")
    generation = await stored(services, queued)
    assert generation.kind == "card" and queued.subjects == ("zqmira", "rraj")
    assert generation.params["greeting"] == "Happy holidays!\nfrom the Rajs"
    assert generation.params["layout"] == "landscape" and generation.params["count"] == 1
    assert generation.params["width"] < generation.params["height"]  # a landscape card's picture box is 3:4
    for greeting, code in [("  \u200b ", "empty_greeting"), ("x" * 121, "greeting_too_long"),
                           ("a\nb\nc\nd", "greeting_too_long"), ("nude card", "blocked_prompt")]:
        assert (await refused(services.imagine.card(requester(ALICE), "rraj person", greeting))).code == code
    assert (await refused(services.imagine.card(requester(ALICE), "rraj person", "hi", "diagonal"))).code == "bad_layout"


async def test_delete_removes_row_and_files_for_the_owner_only(services, made):
    assert (await refused(services.imagine.delete(requester(BOB), made.generation_id))).code == "no_generation"
    deleted = await services.imagine.delete(requester(ALICE), made.generation_id)
    assert deleted.files_removed == 2 and deleted.job_cancelled
    assert await stored(services, made) is None
    assert services.store.list_files(generation_root(ALICE, made.generation_id)) == []
    job = await services.db.run(jobs.get_job, made.job_id)
    assert job is None or job.state == "cancelled"


async def test_trigger_autocomplete_lists_only_usable_subjects(services):
    await trained(services, ALICE, "rraj")
    await trained(services, BOB, "bbobz")
    await trained(services, BOB, "bbzecret")
    await services.sharing.share(requester(BOB), "bbobz", guild_id=GUILD)
    choices = await services.imagine.trigger_choices(requester(ALICE), "")
    assert [c.trigger for c in choices] == ["rraj", "bbobz"]
    assert "yours" in choices[0].label and "shared" in choices[1].label
    assert [c.trigger for c in await services.imagine.trigger_choices(requester(ALICE), "BB")] == ["bbobz"]
    assert await services.imagine.trigger_choices(requester(ALICE, guild_id=None), "bb") == []
