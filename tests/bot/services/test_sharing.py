"""/share, /unshare and /subjects."""

from __future__ import annotations

from bot import render
from bot.render import Style
from bot.services.verbs import for_console
from storage import consent, jobs
from tests.bot.services.conftest import GUILD, add_fake_photos, add_subject, give_adapter, refused, requester

ALICE, BOB, CAROL = 101, 202, 303


async def test_only_the_owner_can_share_and_targets_are_checked(services):
    await services.db.run(add_subject, BOB, "bbobz")
    error = await refused(services.sharing.share(requester(ALICE), "bbobz", user_id=CAROL))
    assert error.code == "no_subject" and "bbobz" in error.message
    assert (await refused(services.sharing.share(requester(BOB), "bbobz", user_id=BOB))).code == "bad_target"
    assert (await refused(services.sharing.share(requester(BOB), "bbobz"))).code == "bad_target"
    both = services.sharing.share(requester(BOB), "bbobz", user_id=ALICE, guild_id=GUILD)
    assert (await refused(both)).code == "bad_target"


async def test_share_creates_the_grantee_and_unshare_revokes(services):
    subject = await services.db.run(add_subject, BOB, "bbobz")
    first = await services.sharing.share(requester(BOB), "BBOBZ", user_id=CAROL)
    again = await services.sharing.share(requester(BOB), "bbobz", user_id=CAROL)
    assert first.changed and not again.changed and first.trigger == "bbobz"
    assert await services.db.run(consent.may_use, CAROL, None, subject.id)
    await services.sharing.unshare(requester(BOB), "bbobz", user_id=CAROL)
    assert not await services.db.run(consent.may_use, CAROL, None, subject.id)
    error = await refused(services.sharing.unshare(requester(BOB), "bbobz", user_id=CAROL))
    assert error.code == "not_shared"


async def test_subjects_lists_mine_and_shared_with_adapter_metrics_and_state(services):
    mine = await services.db.run(add_subject, ALICE, "rraj")
    await services.db.run(add_fake_photos, mine, 3)
    metrics = {"identity_similarity": 0.71, "fallback": "no face model installed; CLIP similarity instead"}
    adapter = await services.db.run(give_adapter, services.store, mine, metrics=metrics)
    newer = await services.db.run(give_adapter, services.store, mine, metrics={"identity_similarity": 0.8})
    pending = await services.db.run(add_subject, ALICE, "zqmira")
    await services.db.run(lambda c: jobs.enqueue_job(c, "train", {"subject_ids": [pending.id]}, user_id=ALICE))
    theirs = await services.db.run(add_subject, BOB, "bbobz")
    await services.db.run(give_adapter, services.store, theirs, metrics=metrics)
    await services.db.run(add_subject, BOB, "bbzecret")
    await services.sharing.share(requester(BOB), "bbobz", guild_id=GUILD)
    await services.sharing.share(requester(ALICE), "rraj", user_id=CAROL)

    view = await services.sharing.subjects(requester(ALICE))
    by_trigger = {info.trigger: info for info in view.mine}
    assert set(by_trigger) == {"rraj", "zqmira"} and [s.trigger for s in view.shared] == ["bbobz"]
    rraj = by_trigger["rraj"]
    assert rraj.state == "ready" and rraj.adapter_id == newer.id and rraj.adapter_version == adapter.version + 1
    assert rraj.photos == 3 and rraj.shared_with_users == (CAROL,) and rraj.metrics == {"identity_similarity": 0.8}
    assert by_trigger["zqmira"].state == "queued" and by_trigger["zqmira"].adapter_id is None
    shared = view.shared[0]
    assert shared.label == metrics["fallback"] and shared.metrics["identity_similarity"] == 0.71
    assert shared.photos is None and shared.shared_with_guilds == ()  # the owner's details stay private


async def test_unshare_says_what_access_remains_and_why(services):
    """The issue: `unshare rraj --user 2` said "user 2 can no longer use rraj" while a server-wide share still let
    them. Each reply now names the access that remains, and the command that takes it back."""
    subject = await services.db.run(add_subject, BOB, "bbobz")
    await services.sharing.share(requester(BOB), "bbobz", user_id=CAROL)
    await services.sharing.share(requester(BOB), "bbobz", guild_id=GUILD)
    user_gone = await services.sharing.unshare(requester(BOB), "bbobz", user_id=CAROL)
    assert user_gone.changed and user_gone.still_guilds == (GUILD,) and user_gone.here_guild == GUILD
    assert await services.db.run(consent.may_use, CAROL, GUILD, subject.id)  # really: still through the server
    text = render.share_outcome(user_gone, unshare=True)
    assert "can no longer use" not in text and "still use it here" in text
    assert "/unshare subject:bbobz server:True" in text
    assert "unshare bbobz --server" in for_console(render.share_outcome(user_gone, unshare=True, style=Style.PLAIN))

    await services.sharing.share(requester(BOB), "bbobz", user_id=ALICE)
    server_gone = await services.sharing.unshare(requester(BOB), "bbobz", guild_id=GUILD)
    assert server_gone.still_users == (ALICE,) and server_gone.still_guilds == ()
    text = render.share_outcome(server_gone, unshare=True, style=Style.PLAIN)
    assert "user 101" in text and "directly" in text and "user 303" not in text
    assert not await services.db.run(consent.may_use, CAROL, GUILD, subject.id)

    again = await refused(services.sharing.unshare(requester(BOB), "bbobz", user_id=CAROL))
    assert again.code == "not_shared"


async def test_unsharing_someone_elses_subject_gets_the_truth(services):
    """As the grantee, `unshare bbobz --user <me>` said "You can always use your own subjects"; bbobz is not theirs."""
    await services.db.run(add_subject, BOB, "bbobz")
    await services.db.run(add_subject, BOB, "zprivz")
    await services.sharing.share(requester(BOB), "bbobz", user_id=CAROL)
    error = await refused(services.sharing.unshare(requester(CAROL), "bbobz", user_id=CAROL))
    assert error.code == "not_owner" and "not your subject" in error.message and "own" not in error.message.split(
        "not your subject")[0]
    assert "shared it with you" in error.message
    private = await refused(services.sharing.unshare(requester(CAROL), "zprivz", user_id=CAROL))
    assert private.code == "no_subject"  # a private subject stays unconfirmed
    mine = await refused(services.sharing.unshare(requester(BOB), "bbobz", user_id=BOB))
    assert mine.code == "bad_target" and "yours" in mine.message
