"""The whole path with the real worker and its handlers on the tiny model: /train, the job completes, the owner is
told; then /imagine with the trigger returns an image. The worker runs in-process (a thread), wired as
`python -m trainer` wires it; settings keep it to a few steps."""

import pytest

from storage import jobs
from tests.bot.conftest import run_worker, share_models, start_training, texts

pytestmark = [pytest.mark.end_to_end, pytest.mark.slow]


async def work_until_idle(world, settings) -> None:
    """Run the worker until the queue is empty (in a thread; the bot's loop stays free), then let the watcher
    report what happened."""
    await run_worker(settings)
    await world.env.advance_time(3)


async def train_for_real(world, settings, bot_services) -> None:
    submitted = await start_training(world, world.alice)
    assert "queued as job #" in texts(submitted)
    await work_until_idle(world, settings)
    job = await bot_services.db.run(jobs.get_job, int(texts(submitted).split("job #")[1].split(" ")[0]))
    assert job.state == "succeeded", job.error
    notice = world.channel.last_message
    assert f"<@{world.alice.id}>" in notice.content and "`rraj` is trained" in notice.content


async def test_train_with_the_real_worker(world, bot_settings, bot_services, shared_model_dirs):
    share_models(bot_settings, shared_model_dirs)
    await train_for_real(world, bot_settings, bot_services)


async def test_imagine_with_the_trigger_after_real_training(world, bot_settings, bot_services, shared_model_dirs):
    share_models(bot_settings, shared_model_dirs)
    await train_for_real(world, bot_settings, bot_services)
    queued = await world.alice.slash(world.channel, "imagine", prompt="a photo of rraj person", count=1, seed="7")
    assert "queued as job #" in texts(queued)
    await work_until_idle(world, bot_settings)
    posted = world.channel.last_message
    assert "seed 7" in posted.content and len(posted.attachments) == 1
    assert posted.attachments[0].content_type in (None, "image/png", "image/jpeg")
    refused = await world.bob.slash(world.channel, "imagine", prompt="a photo of rraj person")
    assert "queued" not in texts(refused)
