"""/train through the real intake: verdicts, what is stored, and when a job is queued."""

from __future__ import annotations

import pytest

from bot.services import ServiceError, Upload
from bot.services.training import TrainRequest
from bot.services.verbs import for_console
from storage import jobs, photos, subjects
from storage.jobs import claim_next_job
from tests.bot.services.conftest import ADMIN, CHANNEL, add_fake_photos, add_subject, refused, requester
from tests.corpus import astronaut_jpeg, camera_jpeg, cat_jpeg, coffee_jpeg
from intake.triggers import suggest_trigger, validate_trigger

ALICE, BOB = 101, 202


def three_photos() -> list[Upload]:
    return [Upload("astronaut.jpg", astronaut_jpeg()), Upload("camera.jpg", camera_jpeg()),
            Upload("cat.jpg", cat_jpeg())]


async def test_train_stores_accepted_photos_rejects_the_cat_and_queues_a_job(services):
    outcome = await services.training.start(requester(ALICE), TrainRequest(
        trigger="rraj", class_noun="person", display_name="Raj", uploads=tuple(three_photos())
    ))

    assert [v.accepted for v in outcome.verdicts] == [True, True, False]
    cat = outcome.verdicts[2]
    assert cat.code == "no_face" and cat.message.startswith("photo 3 (cat.jpg): no face")
    assert outcome.created and outcome.subject.trigger == "rraj" and outcome.photos_total == 2
    assert outcome.needs_more == 0 and outcome.queue_position == 1

    rows = await services.db.run(
        lambda conn: conn.execute("SELECT status, original_name, original_path, reason FROM photos").fetchall()
    )
    accepted = [r for r in rows if r["status"] == "accepted"]
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert [r["original_name"] for r in accepted] == ["astronaut.jpg", "camera.jpg"]
    assert len(rejected) == 1 and rejected[0]["original_path"] is None and "no face" in rejected[0]["reason"]
    stored = services.store.list_files()
    assert len(stored) == 4  # an original and a crop for each accepted photo, nothing for the cat
    assert all(f"/subjects/{outcome.subject.subject_id}/" in key for key in stored)

    job = await services.db.run(jobs.get_job, outcome.job_id)
    assert job.kind == "train" and job.user_id == ALICE and job.channel_id == CHANNEL
    assert job.payload == {"subject_ids": [outcome.subject.subject_id], "family": "tiny-sd15",
                           "base_model": "tiny-sd15", "overrides": {}}
    assert any("5 to 20" in note for note in outcome.notes)


async def test_omitted_trigger_is_suggested_from_the_name_and_used(services):
    outcome = await services.training.start(requester(ALICE), TrainRequest(
        trigger=None, class_noun="woman", display_name="Mira",
        uploads=(Upload("a.jpg", astronaut_jpeg()), Upload("c.jpg", camera_jpeg())),
    ))
    trigger = outcome.subject.trigger
    assert outcome.trigger_suggested and validate_trigger(trigger).ok
    assert "mira" in trigger
    subject = await services.db.run(subjects.get_subject, outcome.subject.subject_id)
    assert subject.trigger == trigger and subject.class_noun == "woman" and subject.display_name == "Mira"


@pytest.mark.parametrize("taken_variant", ["rraj", "RRAJ", "rr\u0430j"])  # the last has a Cyrillic a
async def test_a_taken_or_look_alike_trigger_is_refused_and_nothing_is_stored(services, taken_variant):
    await services.db.run(add_subject, BOB, "rraj")
    with pytest.raises(ServiceError) as error:
        await services.training.start(requester(ALICE), TrainRequest(
            trigger=taken_variant, class_noun="person", uploads=tuple(three_photos())
        ))
    assert error.value.code == "bad_trigger"
    assert "trigger" in error.value.message
    assert await services.db.run(subjects.subjects_owned, ALICE) == []
    assert services.store.list_files() == []


async def test_a_common_word_trigger_and_a_bad_class_noun_are_refused(services):
    with pytest.raises(ServiceError, match="common English word") as error:
        await services.training.start(requester(ALICE), TrainRequest(
            trigger="kiwi", class_noun="person", uploads=tuple(three_photos())
        ))
    assert error.value.code == "bad_trigger"
    with pytest.raises(ServiceError) as error:
        await services.training.start(requester(ALICE), TrainRequest(
            trigger="zqrraj", class_noun="person!!", uploads=tuple(three_photos())
        ))
    assert error.value.code == "bad_class_noun"


async def test_too_few_photos_keeps_them_and_extending_the_subject_queues_training(services):
    first = await services.training.start(requester(ALICE), TrainRequest(
        trigger="rraj", class_noun="person", uploads=(Upload("a.jpg", astronaut_jpeg()),)
    ))
    assert first.created and first.job_id is None and first.needs_more == 1
    assert any("add 1 more" in note for note in first.notes)

    second = await services.training.start(requester(ALICE), TrainRequest(
        trigger="RRAJ", class_noun="man",
        uploads=(Upload("again.jpg", astronaut_jpeg()), Upload("camera.jpg", camera_jpeg())),
    ))
    assert not second.created and second.subject.subject_id == first.subject.subject_id
    assert [v.code for v in second.verdicts] == ["duplicate", "ok"]
    assert second.photos_total == 2 and second.job_id is not None
    assert any("keeps its class noun `person`" in note for note in second.notes)
    assert await services.db.run(photos.count_accepted, first.subject.subject_id) == 2


async def test_no_usable_photo_creates_nothing(services):
    outcome = await services.training.start(requester(ALICE), TrainRequest(
        trigger="rraj", class_noun="person", uploads=(Upload("cat.jpg", cat_jpeg()),)
    ))
    assert outcome.job_id is None and not outcome.created and outcome.photos_total == 0
    assert outcome.subject is None and outcome.verdicts[0].code == "no_face"
    assert any("nothing was saved" in note for note in outcome.notes)
    assert await services.db.run(subjects.subjects_owned, ALICE) == []


async def test_a_caption_without_the_trigger_rejects_that_photo_only(services):
    outcome = await services.training.start(requester(ALICE), TrainRequest(
        trigger="rraj", class_noun="person",
        uploads=(Upload("a.jpg", astronaut_jpeg(), caption="a woman in a space suit"),
        Upload("c.jpg", camera_jpeg(), caption="rraj person with a camera\u200b"),)))
    assert [v.code for v in outcome.verdicts] == ["bad_caption", "ok"]
    assert "photo 1 (a.jpg)" in outcome.verdicts[0].message and "rraj" in outcome.verdicts[0].message
    stored = await services.db.run(photos.accepted_photos, outcome.subject.subject_id)
    assert [p.caption for p in stored] == ["rraj person with a camera"]
    assert len(services.store.list_files()) == 2


async def test_one_training_job_at_a_time_but_admins_are_exempt(services):
    subject = await services.db.run(add_subject, ALICE, "rraj")
    await services.db.run(add_fake_photos, subject, 3)
    first = await services.training.start(requester(ALICE), TrainRequest(trigger="rraj", class_noun="person"))
    assert first.job_id is not None and first.photos_total == 3
    with pytest.raises(ServiceError) as error:
        await services.training.start(requester(ALICE), TrainRequest(
            trigger="zqmira", class_noun="woman", uploads=tuple(three_photos())
        ))
    assert error.value.code == "training_busy" and f"#{first.job_id}" in error.value.message
    assert services.store.list_files() == []

    admin_subject = await services.db.run(add_subject, ADMIN, "zqadmin")
    await services.db.run(add_fake_photos, admin_subject, 2)
    for _ in range(2):
        assert (await services.training.start(requester(ADMIN), TrainRequest(
            trigger="zqadmin", class_noun="person"))).job_id


async def test_too_many_photos_for_the_subject_is_refused_up_front(build_services):
    services = await build_services(max_photos_per_subject=3)
    subject = await services.db.run(add_subject, ALICE, "rraj")
    await services.db.run(add_fake_photos, subject, 2)
    with pytest.raises(ServiceError, match="room for only 1 more") as error:
        await services.training.start(requester(ALICE), TrainRequest(
            trigger="rraj", class_noun="person", uploads=tuple(three_photos()[:2])
        ))
    assert error.value.code == "too_many_photos"


async def test_a_new_subject_needs_photos(services):
    with pytest.raises(ServiceError) as error:
        await services.training.start(requester(ALICE), TrainRequest(trigger="rraj", class_noun="person"))
    assert error.value.code == "no_photos"


async def test_family_group_collects_subjects_and_trains_them_in_one_job(services):
    mum = await services.training.start(requester(ALICE), TrainRequest(
        trigger="zqmum", class_noun="woman", display_name="Mum", uploads=tuple(three_photos()[:2]),
        family_group="Smiths",
    ))
    assert mum.job_id is None and mum.group == "smiths"
    assert any("/train-family" in note for note in mum.notes)
    dad = await services.db.run(add_subject, ALICE, "zqdad")
    await services.db.run(lambda conn: subjects.set_subject_group(conn, dad.id, subjects.group_id_for(conn, ALICE, "smiths")))
    with pytest.raises(ServiceError, match="`zqdad` needs 2 more") as error:
        await services.training.train_family(requester(ALICE), "smiths")
    assert error.value.code == "too_few_photos"

    await services.db.run(add_fake_photos, dad, 2)
    family = await services.training.train_family(requester(ALICE), "Smiths")
    job = await services.db.run(jobs.get_job, family.job_id)
    assert sorted(job.payload["subject_ids"]) == sorted([mum.subject.subject_id, dad.id])
    assert {s.trigger for s in family.subjects} == {"zqmum", "zqdad"} and family.photos_total == 4
    with pytest.raises(ServiceError) as error:
        await services.training.train_family(requester(BOB), "smiths")
    assert error.value.code == "no_group"


async def test_a_user_being_forgotten_gets_a_clear_message(services):
    subject = await services.db.run(add_subject, ALICE, "rraj")
    await services.db.run(add_fake_photos, subject, 2)
    queued = await services.training.start(requester(ALICE), TrainRequest(trigger="rraj", class_noun="person"))
    claimed = await services.db.run(claim_next_job, "test-worker", 60)
    assert claimed.id == queued.job_id
    report = await services.account.forget(requester(ALICE))
    assert report.finishing and report.jobs_stopped == 1
    with pytest.raises(ServiceError) as error:
        await services.training.start(requester(ALICE), TrainRequest(
            trigger="zqnew", class_noun="person", uploads=tuple(three_photos())
        ))
    assert error.value.code == "being_forgotten" and "/forget" in error.value.message


@pytest.fixture(scope="module")
def tiny_clip_tokenizer():
    from trainer.tiny import build_clip_tokenizer

    return build_clip_tokenizer()


async def test_the_suggestion_prefers_triggers_the_family_tokenizer_encodes_compactly(
    build_services, tiny_clip_tokenizer
):
    services = await build_services()
    tiny_clip_tokenizer.save_pretrained(services.settings.models_dir / "tiny-sd15" / "tokenizer")
    outcome = await services.training.start(requester(ALICE), TrainRequest(
        trigger=None, class_noun="woman", display_name="Mira", uploads=(Upload("a.jpg", astronaut_jpeg()),)
    ))

    def tokens(text: str) -> int:
        return len(tiny_clip_tokenizer.encode(text, add_special_tokens=False))

    plain_choice = suggest_trigger("Mira")[0]  # what is suggested without a tokenizer
    assert outcome.trigger_suggested and validate_trigger(outcome.subject.trigger).ok
    assert tokens(outcome.subject.trigger) < tokens(plain_choice)


async def test_a_pet_subject_needs_no_human_face(services):
    outcome = await services.training.start(requester(ALICE), TrainRequest(
        trigger="zqtabby", class_noun="cat", display_name="Chelsea", uploads=(Upload("cat.jpg", cat_jpeg()),)
    ))
    assert [v.code for v in outcome.verdicts] == ["ok"] and outcome.created and outcome.needs_more == 1


async def test_a_full_disk_refuses_the_upload_plainly_and_keeps_what_was_stored(services, monkeypatch):
    import errno
    import os

    first = await services.training.start(requester(ALICE), TrainRequest(
        trigger="rraj", class_noun="person", display_name="Raj", uploads=(Upload("astronaut.jpg", astronaut_jpeg()),)
    ))
    before = {key: services.store.read_bytes(key) for key in services.store.list_files()}

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(ServiceError) as error:
        await services.photos.add(requester(ALICE), "rraj", [Upload("camera.jpg", camera_jpeg())])
    monkeypatch.undo()
    assert error.value.code == "disk_full" and "disk is full" in error.value.message
    assert {key: services.store.read_bytes(key) for key in services.store.list_files()} == before
    assert await services.db.run(photos.count_accepted, first.subject.subject_id) == 1


async def test_retraining_a_subject_uses_its_stored_photos_and_the_hints_name_the_slash_command(services):
    subject = await services.db.run(add_subject, ALICE, "rraj")
    await services.db.run(add_fake_photos, subject, 1)
    added = await services.photos.add(requester(ALICE), "rraj", [Upload("c.jpg", camera_jpeg())])
    assert added.photos_total == 2 and "Run `/train subject:rraj` to train with the new photos." in added.notes
    outcome = await services.training.start(requester(ALICE), TrainRequest(subject="RRAJ"))
    assert not outcome.created and outcome.subject.subject_id == subject.id and outcome.verdicts == ()
    job = await services.db.run(jobs.get_job, outcome.job_id)
    assert job.kind == "train" and job.payload["subject_ids"] == [subject.id]
    error = await refused(services.training.start(requester(ALICE), TrainRequest(subject="zqnobody")))
    assert error.code == "no_subject" and "/subjects" in error.message


async def test_a_new_trigger_that_looks_like_one_of_your_own_is_refused_not_merged(services):
    """`--trigger zqvllx` by the owner of `zqviix` routed the photos into zqviix (i and l look alike)."""
    own = await services.db.run(add_subject, ALICE, "zqviix")
    await services.db.run(add_fake_photos, own, 3)
    error = await refused(services.training.start(requester(ALICE), TrainRequest(
        trigger="zqvllx", class_noun="person", uploads=(Upload("a.jpg", astronaut_jpeg()),))))
    assert error.code == "own_look_alike"
    assert "`zqvllx` is too close to your `zqviix`" in error.message and "/train subject:zqviix" in error.message
    assert "train --subject zqviix" in for_console(error.message)
    assert await services.db.run(photos.count_accepted, own.id) == 3  # nothing was added to zqviix
    assert await services.db.run(jobs.active_jobs, ALICE) == []


async def test_no_job_is_queued_when_no_new_photo_was_accepted_unless_retraining_was_asked(services):
    """`train coffee.jpg cat.jpg --trigger zzmia` rejected both photos and then trained on the stored ones."""
    own = await services.db.run(add_subject, ALICE, "zzmia")
    await services.db.run(add_fake_photos, own, 3)
    rejected = (Upload("coffee.jpg", coffee_jpeg()), Upload("cat.jpg", cat_jpeg()))
    for request in (TrainRequest(trigger="zzmia", uploads=rejected), TrainRequest(subject="zzmia", uploads=rejected)):
        outcome = await services.training.start(requester(ALICE), request)
        assert outcome.accepted == 0 and outcome.job_id is None
        assert any("no training was queued" in note and "/train subject:zzmia" in note for note in outcome.notes)
        assert await services.db.run(jobs.active_jobs, ALICE) == []
    retrain = await services.training.start(requester(ALICE), TrainRequest(subject="zzmia"))
    assert retrain.job_id is not None  # asked for: retrains from the stored photos
