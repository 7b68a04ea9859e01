"""The same replies in Discord (SimCord): unshare names what access remains, /cancel asks which job, a look-alike of
your own trigger is refused, no job without a new photo, and a greeting no font can draw is refused up front."""

from intake import typefaces
from storage import consent, jobs
from tests.bot.conftest import start_training, texts
from tests.bot.services.conftest import add_fake_photos, add_subject
from tests.corpus import tiny_image


async def test_unshare_says_what_access_remains_and_a_grantee_gets_a_true_answer(world, bot_services):
    subject = await bot_services.db.run(add_subject, world.alice.id, "rraj")
    await world.alice.slash(world.channel, "share", subject="rraj", user=world.bob)
    await world.alice.slash(world.channel, "share", subject="rraj", server=True)
    answer = texts(await world.alice.slash(world.channel, "unshare", subject="rraj", user=world.bob))
    assert "can no longer use" not in answer and "still use it here" in answer
    assert "/unshare subject:rraj server:True" in answer
    assert await bot_services.db.run(consent.may_use, world.bob.id, world.guild.id, subject.id)
    grantee = texts(await world.bob.slash(world.channel, "unshare", subject="rraj", user=world.bob))
    assert "You can always use your own subjects" not in grantee
    assert "`rraj` is not your subject" in grantee and "shared it with everyone in this server" in grantee


async def test_cancel_without_a_number_asks_which_when_there_are_several(world, bot_services):
    await world.alice.slash(world.channel, "imagine", prompt="a lighthouse")
    await world.alice.slash(world.channel, "imagine", prompt="a tower")
    answer = texts(await world.alice.slash(world.channel, "cancel"))
    assert "You have 2 jobs" in answer and "/cancel job:2" in answer and "Cancelled" not in answer
    assert {job.state for job in await bot_services.db.run(jobs.active_jobs, world.alice.id)} == {"queued"}
    await world.alice.slash(world.channel, "cancel", job=2)
    answer = texts(await world.alice.slash(world.channel, "cancel"))
    assert 'Cancelled job #1 (generating "a lighthouse")' in answer


async def test_a_trigger_that_looks_like_your_own_is_refused_and_rejected_photos_queue_nothing(world, bot_services):
    own = await bot_services.db.run(add_subject, world.alice.id, "zqviix")
    await bot_services.db.run(add_fake_photos, own, 3)
    answer = texts(await start_training(world, world.alice, trigger="zqvllx",
                                        photos=[("tiny.png", tiny_image())]))
    assert "`zqvllx` is too close to your `zqviix`" in answer and "/train subject:zqviix" in answer
    answer = texts(await start_training(world, world.alice, trigger="zqviix",
                                        photos=[("tiny.png", tiny_image())]))
    assert "no training was queued" in answer and "/train subject:zqviix" in answer
    assert await bot_services.db.run(jobs.active_jobs, world.alice.id) == []


async def test_a_greeting_no_font_can_draw_is_refused_before_queueing(world, bot_services, monkeypatch):
    greeting = "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e1b\u0e35\u0e43\u0e2b\u0e21\u0e48"  # Thai: no font here
    thai = texts(await world.alice.slash(world.channel, "card", prompt="a snowy village", greeting=greeting))
    assert "Cards cannot draw these characters" in thai
    monkeypatch.setattr(typefaces, "cjk_typeface", lambda name: None)  # a host without the CJK font package
    japanese = texts(await world.alice.slash(world.channel, "card", prompt="a snowy village",
                                             greeting="\u660e\u3051\u307e\u3057\u3066\u304a\u3081\u3067\u3068\u3046"))
    assert "not installed" in japanese and "justmytype-intl-cjk" in japanese
    assert await bot_services.db.run(jobs.active_jobs, world.alice.id) == []
