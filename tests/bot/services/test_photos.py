"""/photos list|add|remove|caption."""

from __future__ import annotations


from bench.face_set import mirrored, people, rotated
from bot.services import Upload
from storage import jobs
from tests.bot.services.conftest import add_subject, refused, requester
from tests.corpus import astronaut_jpeg, camera_jpeg, coffee_jpeg, jpeg

ALICE, BOB = 101, 202


async def test_add_list_caption_and_remove(services):
    await services.db.run(add_subject, ALICE, "rraj")
    added = await services.photos.add(requester(ALICE), "rraj", [
        Upload("a.jpg", astronaut_jpeg(), caption="rraj person in orange"), Upload("coffee.jpg", coffee_jpeg()),
        Upload("c.jpg", camera_jpeg())])
    assert [v.code for v in added.verdicts] == ["ok", "no_face", "ok"] and added.photos_total == 2
    assert any("/train" in note for note in added.notes)
    duplicate = await services.photos.add(requester(ALICE), "rraj", [Upload("again.jpg", astronaut_jpeg())])
    assert duplicate.verdicts[0].code == "duplicate" and duplicate.photos_total == 2

    listed = await services.photos.list(requester(ALICE), "rraj")
    assert [(p.number, p.original_name) for p in listed] == [(1, "a.jpg"), (2, "c.jpg")]
    assert listed[0].caption == "rraj person in orange" and listed[1].caption == "a photo of rraj person"
    assert all(p.crop_path.is_file() for p in listed)

    captioned = await services.photos.caption(requester(ALICE), "rraj", 2, "RRAJ person holding a camera")
    assert captioned.caption == "rraj person holding a camera"
    assert (await refused(services.photos.caption(requester(ALICE), "rraj", 2, "a man"))).code == "bad_caption"

    removed = await services.photos.remove(requester(ALICE), "rraj", 1)
    assert removed.original_name == "a.jpg" and not removed.crop_path.exists()
    assert [p.original_name for p in await services.photos.list(requester(ALICE), "rraj")] == ["c.jpg"]
    assert len(services.store.list_files()) == 2


async def test_photo_commands_are_for_the_owner_and_check_numbers(services):
    subject = await services.db.run(add_subject, ALICE, "rraj")
    assert (await refused(services.photos.list(requester(BOB), "rraj"))).code == "no_subject"
    assert (await refused(services.photos.add(requester(BOB), "rraj", [Upload("a.jpg", b"x")]))).code == "no_subject"
    assert (await refused(services.photos.remove(requester(ALICE), "rraj", 1))).code == "no_photos"
    await services.photos.add(requester(ALICE), "rraj", [Upload("a.jpg", astronaut_jpeg())])
    for number in (0, 2, -1, True):
        assert (await refused(services.photos.remove(requester(ALICE), "rraj", number))).code == "bad_photo_number"
    await services.db.run(lambda c: jobs.enqueue_job(c, "train", {"subject_ids": [subject.id]}, user_id=ALICE))
    assert (await refused(services.photos.remove(requester(ALICE), "rraj", 1))).code == "subject_training"


async def test_a_photo_of_someone_else_is_refused_against_the_stored_ones(services):
    """Embeddings are stored once per photo at upload and compared with the next uploads."""
    load, mark = people()["astronaut"]
    looks = [load(), mirrored(load(), mark)[0], rotated(load(), 20, mark)[0]]
    await services.db.run(add_subject, ALICE, "rraj")
    first = await services.photos.add(requester(ALICE), "rraj",
                                      [Upload(f"a{n}.jpg", jpeg(pixels)) for n, pixels in enumerate(looks, 1)])
    assert [v.code for v in first.verdicts] == ["ok", "ok", "ok"]
    stored = await services.db.run(lambda c: c.execute("SELECT count(*) FROM photo_embeddings").fetchone()[0])
    assert stored == 3
    other = await services.photos.add(requester(ALICE), "rraj", [Upload("friend.jpg", camera_jpeg())])
    verdict = other.verdicts[0]
    assert verdict.code == "different_person" and other.photos_total == 3
    assert verdict.message.startswith("photo 1 (friend.jpg): this looks like a different person from the 3 photos")
