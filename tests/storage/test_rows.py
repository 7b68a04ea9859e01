import sqlite3

import pytest

from storage import adapters, consent, generations, photos, subjects
from tests.storage.conftest import make_subject


async def test_user_rows_are_upserted(call):
    await call(subjects.ensure_user, 1, "ann")
    await call(subjects.ensure_user, 1, "")
    assert await call(lambda c: c.execute("SELECT display_name FROM users WHERE id = 1").fetchone()[0]) == "ann"


async def test_triggers_are_unique_by_key(call):
    await call(make_subject, 1, "rraj", trigger_key="rraj")
    with pytest.raises(subjects.TriggerTakenError):
        await call(make_subject, 2, "rraj1", trigger_key="rraj")
    assert await call(subjects.taken_trigger_keys) == {"rraj"}


async def test_forgotten_user_must_wait_for_the_sweep(call):
    await call(subjects.ensure_user, 1, "ann")
    await call(lambda c: c.execute("UPDATE users SET forgotten_at = 1 WHERE id = 1"))
    with pytest.raises(subjects.UserBeingForgottenError):
        await call(subjects.ensure_user, 1, "ann")


async def test_groups_collect_subjects(call):
    a = await call(make_subject, 1, "jrus")
    b = await call(make_subject, 1, "arus")
    group = await call(subjects.group_id_for, 1, "russells")
    assert await call(subjects.group_id_for, 1, "russells") == group
    for subject in (a, b):
        await call(subjects.set_subject_group, subject.id, group)
    assert [s.trigger for s in await call(subjects.subjects_in_group, group)] == ["jrus", "arus"]
    assert await call(subjects.group_name, group) == "russells"


async def test_photo_rows(call):
    subject = await call(make_subject, 1, "rraj")
    kept = await call(
        photos.add_accepted_photo, subject.id, original_name="IMG_1.HEIC", sha256="a" * 64, phash="f0" * 8,
        original_path="users/1/x.jpg", crop_path="users/1/x.png", size_bytes=10, width=4, height=3,
        face_box=(1, 2, 3, 4), caption="a photo of rraj person",
    )
    await call(photos.add_rejected_photo, subject.id, "cat.jpg", "no face found")
    assert [p.id for p in await call(photos.accepted_photos, subject.id)] == [kept.id]
    assert kept.face_box == (1, 2, 3, 4)
    assert await call(photos.known_phashes, subject.id) == ["f0" * 8]
    await call(photos.set_caption, kept.id, "a photo of rraj person smiling")
    assert (await call(photos.get_photo, kept.id)).caption.endswith("smiling")
    assert (await call(photos.delete_photo, kept.id)).id == kept.id
    assert await call(photos.count_accepted, subject.id) == 0


async def test_accepted_photo_needs_its_files(call):
    subject = await call(make_subject, 1, "rraj")
    with pytest.raises(sqlite3.IntegrityError):
        await call(lambda c: c.execute(
            "INSERT INTO photos (subject_id, status, original_name, created_at) VALUES (?, 'accepted', 'x', 0)",
            (subject.id,)))


async def _adapter(call, owner, subject_ids, path="users/1/adapters/1/pytorch_lora_weights.safetensors"):
    return await call(
        adapters.record_adapter, owner_id=owner, job_id=None, family="tiny-sd15", base_model="tiny-sd15",
        path=path, sha256="b" * 64, size_bytes=100, params={"rank": 4}, subject_ids=subject_ids,
    )


async def test_adapter_versions_and_newest(call):
    a = await call(make_subject, 1, "jrus")
    b = await call(make_subject, 1, "arus")
    first = await _adapter(call, 1, [a.id])
    family = await _adapter(call, 1, [a.id, b.id])
    assert (first.version, family.version) == (1, 2)
    assert family.subject_ids == (a.id, b.id)
    assert (await call(adapters.newest_adapter_for_subject, a.id)).id == family.id
    assert (await call(adapters.newest_adapter_for_subject, b.id)).id == family.id
    assert await call(adapters.newest_adapter_for_subject, a.id, "flux") is None
    await call(adapters.set_adapter_metrics, first.id, {"drift": 0.1})
    assert (await call(adapters.get_adapter, first.id)).metrics == {"drift": 0.1}
    assert await call(adapters.existing_adapter_ids, [first.id, 999]) == {first.id}


async def test_consent_owner_user_grant_and_guild_grant(call):
    subject = await call(make_subject, 1, "rraj")
    await call(subjects.ensure_user, 2, "bob")
    assert await call(consent.may_use, 1, None, subject.id)
    assert not await call(consent.may_use, 2, None, subject.id)
    assert await call(consent.resolve_trigger_key, 2, None, "rraj") is None
    assert await call(consent.grant_access, subject.id, user_id=2)
    assert not await call(consent.grant_access, subject.id, user_id=2)
    assert (await call(consent.resolve_trigger_key, 2, None, "rraj")).id == subject.id
    assert await call(consent.revoke_access, subject.id, user_id=2) == 1
    assert not await call(consent.may_use, 2, 77, subject.id)
    await call(consent.grant_access, subject.id, guild_id=77)
    assert await call(consent.may_use, 2, 77, subject.id)
    assert not await call(consent.may_use, 2, 78, subject.id)
    assert not await call(consent.may_use, 2, None, subject.id)
    assert [s.id for s in await call(consent.usable_subjects, 2, 77)] == [subject.id]


async def test_deleted_subject_is_unusable_even_by_its_owner(call):
    subject = await call(make_subject, 1, "rraj")
    await call(lambda c: c.execute("UPDATE subjects SET deleted_at = 1 WHERE id = ?", (subject.id,)))
    assert not await call(consent.may_use, 1, None, subject.id)
    assert await call(subjects.get_subject, subject.id) is None


async def test_generation_rows_keep_every_parameter(call):
    subject = await call(make_subject, 1, "rraj")
    gen_id = await call(
        generations.create_generation, user_id=1, kind="imagine", prompt="a photo of rraj person", negative_prompt="",
        seed=2**63 - 1, params={"steps": 4, "scheduler": "ddim"}, adapters=[{"adapter_id": 3, "weight": 1.0}],
        subject_ids=[subject.id], guild_id=5, channel_id=6,
    )
    assert await call(generations.set_outputs, gen_id, ["users/1/generations/1/0.png"])
    await call(generations.set_generation_message, gen_id, 6, 99)
    gen = await call(generations.get_generation, gen_id)
    assert (gen.seed, gen.params["scheduler"], gen.subject_ids, gen.message_id) == (2**63 - 1, "ddim", (subject.id,), 99)
    assert gen.outputs == ["users/1/generations/1/0.png"]
    await call(generations.delete_generation, gen_id)
    assert not await call(generations.set_outputs, gen_id, ["x"])


async def test_styles(call):
    await call(generations.add_style, name="pixel", family="tiny-sd15", path="styles/ab.safetensors",
               sha256="ab" * 32, weight=0.7, added_by=None)
    await call(generations.add_style, name="pixel", family="tiny-sd15", path="styles/cd.safetensors",
               sha256="cd" * 32, weight=0.5, added_by=None)
    styles = await call(generations.list_styles, "tiny-sd15")
    assert [(s.name, s.weight) for s in styles] == [("pixel", 0.5)]
    assert (await call(generations.delete_style, "pixel")).sha256 == "cd" * 32
    assert await call(generations.get_style, "pixel") is None


async def test_exports_are_recorded_and_old_ones_rotated(call):
    from storage import exports

    await call(subjects.ensure_user, 1, "ann")
    first_id, first_key, stale = await call(exports.record_export, 1, 3600)
    assert first_key == f"users/1/exports/{first_id}.zip" and stale == []
    second_id, _, stale = await call(exports.record_export, 1, -1)  # everything older than "now + 1 s" is stale
    assert stale == [first_key]
    await call(exports.delete_export, second_id)
    assert await call(lambda c: c.execute("SELECT count(*) FROM exports").fetchone()[0]) == 0
