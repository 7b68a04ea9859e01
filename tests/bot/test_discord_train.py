"""/train and /photos through SimCord: the upload form, a verdict for every photo, and the queued job."""

from storage import jobs, photos, subjects
from tests.bot.conftest import CAPTION_FIELD, PHOTO_FIELD, start_training, texts
from tests.bot.services.conftest import add_fake_photos, add_subject
from tests.corpus import astronaut_jpeg, camera_jpeg, cat_jpeg, coffee_jpeg, two_faces_jpeg


async def test_train_opens_an_upload_form_for_ten_photos_with_captions(world):
    shown = await world.alice.slash(world.channel, "train", trigger="rraj", class_noun="person")
    assert shown.acknowledged and shown.modal is not None
    controls = [c["component"] for c in shown.modal["components"]]
    upload = next(c for c in controls if c["custom_id"] == PHOTO_FIELD)
    assert upload["max_values"] == 10 and upload["type"] == 19  # FILE_UPLOAD
    captions = next(c for c in controls if c["custom_id"] == CAPTION_FIELD)
    assert captions["style"] == 2 and captions.get("required") is False  # paragraph, optional


async def test_each_photo_gets_its_verdict_and_the_job_is_queued(world, bot_services):
    result = await start_training(world, world.alice, photos=[
        ("astronaut.jpg", astronaut_jpeg()), ("camera.jpg", camera_jpeg()), ("cat.jpg", cat_jpeg()),
    ])
    answer = texts(result)
    assert result.acknowledged and result.ephemeral
    lines = answer.splitlines()
    assert lines[0].startswith("\u2705") and "astronaut.jpg" in lines[0]
    assert lines[1].startswith("\u2705") and "camera.jpg" in lines[1]
    assert lines[2].startswith("\u274c") and "cat.jpg" in lines[2] and "no face" in lines[2]
    assert "2 of 3 photo(s) accepted" in answer and "queued as job #" in answer

    def stored(conn):
        subject = subjects.subjects_owned(conn, world.alice.id)[0]
        return subject, photos.accepted_photos(conn, subject.id), jobs.active_jobs(conn, world.alice.id)

    subject, accepted, active = await bot_services.db.run(stored)
    assert subject.trigger == "rraj" and subject.class_noun == "person"
    assert [p.original_name for p in accepted] == ["astronaut.jpg", "camera.jpg"]
    assert len(active) == 1 and active[0].kind == "train" and active[0].channel_id == world.channel.id
    progress = world.channel.last_message
    assert progress.author.bot and f"job #{active[0].id}" in progress.content


async def test_captions_are_matched_to_photos_in_order(world, bot_services):
    shown = await world.alice.slash(world.channel, "train", trigger="rraj")
    await world.alice.submit_modal(shown, {
        PHOTO_FIELD: [("a.jpg", astronaut_jpeg()), ("b.jpg", camera_jpeg())],
        CAPTION_FIELD: "a photo of rraj person in a space suit\n\n",
    })
    subject = (await bot_services.db.run(subjects.subjects_owned, world.alice.id))[0]
    stored = await bot_services.db.run(photos.accepted_photos, subject.id)
    assert "space suit" in stored[0].caption
    assert "space suit" not in stored[1].caption


async def test_no_face_at_all_queues_nothing_and_says_why(world, bot_services):
    result = await start_training(world, world.alice, photos=[("cat.jpg", cat_jpeg()), ("coffee.jpg", coffee_jpeg())])
    answer = texts(result)
    assert answer.count("\u274c") == 2 and "queued" not in answer
    assert await bot_services.db.run(jobs.active_jobs, world.alice.id) == []


async def test_a_bad_trigger_is_refused_before_the_upload_form(world):
    result = await world.alice.slash(world.channel, "train", trigger="@everyone")
    assert result.acknowledged and result.ephemeral and result.modal is None
    assert "use only lowercase letters a-z and digits 0-9" in texts(result)


async def test_a_trigger_is_suggested_when_left_out(world, bot_services):
    result = await start_training(world, world.alice, trigger=None)
    owned = await bot_services.db.run(subjects.subjects_owned, world.alice.id)
    assert len(owned) == 1 and owned[0].trigger != "rraj"
    assert f"I picked the trigger `{owned[0].trigger}` for you; write `{owned[0].trigger} person`" in texts(result)


async def test_photos_list_add_caption_remove(world):
    await start_training(world, world.alice, photos=[("astronaut.jpg", astronaut_jpeg())])
    listed = await world.alice.slash(world.channel, "photos list", subject="rraj")
    assert "1. astronaut.jpg" in texts(listed)

    shown = await world.alice.slash(world.channel, "photos add", subject="rraj")
    added = await world.alice.submit_modal(shown, {PHOTO_FIELD: [("group.jpg", two_faces_jpeg()),
                                                                 ("camera.jpg", camera_jpeg())]})
    verdicts = texts(added).splitlines()
    assert verdicts[0].startswith("\u274c") and "group.jpg" in verdicts[0] and "faces" in verdicts[0]
    assert verdicts[1].startswith("\u2705") and "camera.jpg" in verdicts[1]

    captioned = await world.alice.slash(world.channel, "photos caption", subject="rraj", number=2,
                                        text="a photo of rraj person in black and white")
    assert captioned.acknowledged and "updated" in texts(captioned)
    removed = await world.alice.slash(world.channel, "photos remove", subject="rraj", number=1)
    assert "Removed photo 1" in texts(removed)
    listed = await world.alice.slash(world.channel, "photos list", subject="rraj")
    assert "astronaut.jpg" not in texts(listed) and "camera.jpg" in texts(listed)

    stranger = await world.bob.slash(world.channel, "photos list", subject="rraj")
    assert stranger.ephemeral and "camera.jpg" not in texts(stranger)


async def test_train_with_subject_retrains_from_stored_photos_without_an_upload_form(world, bot_services):
    def stored_rraj(conn):
        subject = add_subject(conn, world.alice.id, "rraj")
        add_fake_photos(conn, subject, 2)

    await bot_services.db.run(stored_rraj)
    result = await world.alice.slash(world.channel, "train", subject="rraj")
    assert result.acknowledged and result.modal is None
    answer = texts(result)
    assert "Subject `rraj` (person), 2 photo(s) in all." in answer and "queued as job #" in answer
    active = await bot_services.db.run(jobs.active_jobs, world.alice.id)
    assert len(active) == 1 and active[0].kind == "train" and active[0].channel_id == world.channel.id

    missing = texts(await world.alice.slash(world.channel, "train", subject="nobody"))
    assert "no subject `nobody` to retrain" in missing and "/subjects" in missing
