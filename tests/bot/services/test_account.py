"""/export and /forget."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from safetensors.numpy import load as load_safetensors

from bot.services import ImagineOptions, ServiceError, Upload
from bot.services.training import TrainRequest
from storage.forget import sweep_forgotten
from storage.jobs import claim_next_job, finish_job
from storage.subjects import get_subject
from tests.bot.services.conftest import add_subject, give_adapter, lora_file_bytes, requester
from tests.corpus import astronaut_jpeg, camera_jpeg

ALICE, BOB = 101, 202
TABLES = ("users", "subjects", "photos", "adapters", "grants", "generations", "jobs", "exports", "subject_groups")


async def test_export_zips_the_newest_adapter_with_a_readme(services):
    subject = await services.db.run(add_subject, ALICE, "rraj")
    await services.db.run(give_adapter, services.store, subject)
    await services.db.run(give_adapter, services.store, subject, metrics={"identity_similarity": 0.77})
    bundle = await services.account.export(requester(ALICE), "rraj")

    assert bundle.path.is_file() and bundle.path.is_absolute() and bundle.size == bundle.path.stat().st_size
    assert bundle.fits_upload and bundle.version == 2 and bundle.filename == "likeness-rraj-v2.zip"
    with zipfile.ZipFile(io.BytesIO(bundle.path.read_bytes())) as archive:
        names = set(archive.namelist())
        readme = archive.read("README.txt").decode()
        weights = archive.read("pytorch_lora_weights.safetensors")
    assert names == {"pytorch_lora_weights.safetensors", "metadata.json", "loss.png", "README.txt"}
    assert set(bundle.files) == names
    assert "rraj person" in readme and "identity_similarity" in readme and "0.77" in readme
    assert weights == lora_file_bytes()  # the stored weights, byte for byte
    assert sorted(load_safetensors(weights)) == ["unet.down.to_q.lora_A.weight", "unet.down.to_q.lora_B.weight"]
    tensor_data = weights[8 + int.from_bytes(weights[:8], "little"):]  # A1111's LoRA hash skips the header
    assert ("LoRA hash of pytorch_lora_weights.safetensors, the file A1111 and ComfyUI load (Civitai AutoV3: "
            f"SHA-256 of the tensor data): {hashlib.sha256(tensor_data).hexdigest()}") in readme  # no kohya copy here
    assert hashlib.sha256(weights).hexdigest() not in readme  # the whole-file hash depends on the header
    rows = await services.db.run(lambda c: c.execute("SELECT user_id, path FROM exports").fetchall())
    assert [tuple(r) for r in rows] == [(ALICE, services.store.relative(bundle.path))]


async def test_export_refuses_others_and_untrained_subjects(services):
    await services.db.run(add_subject, BOB, "bbobz")
    await services.db.run(add_subject, ALICE, "rraj")
    with pytest.raises(ServiceError) as error:
        await services.account.export(requester(ALICE), "bbobz")
    assert error.value.code == "no_subject"
    with pytest.raises(ServiceError) as error:
        await services.account.export(requester(ALICE), "rraj")
    assert error.value.code == "not_trained"


async def test_a_big_export_says_it_does_not_fit(build_services):
    services = await build_services(max_upload_bytes=1024)
    subject = await services.db.run(add_subject, ALICE, "rraj")
    await services.db.run(give_adapter, services.store, subject)
    services.store.write_bytes(
        (await services.db.run(lambda c: c.execute("SELECT path FROM adapters").fetchone()[0])).rsplit("/", 1)[0]
        + "/big.bin", bytes(range(256)) * 64)
    bundle = await services.account.export(requester(ALICE), "rraj")
    assert bundle.size > 1024 and not bundle.fits_upload


async def footprint(services, user_id: int) -> dict[str, int]:
    def count(conn):
        where = {"users": "id = ?", "subjects": "owner_id = ?", "adapters": "owner_id = ?",
                 "subject_groups": "owner_id = ?", "photos": "subject_id IN (SELECT id FROM subjects)",
                 "grants": "user_id = ? OR subject_id IN (SELECT id FROM subjects WHERE owner_id = ?)"}
        counts = {}
        for table in TABLES:
            clause = where.get(table, "user_id = ?")
            counts[table] = conn.execute(f"SELECT count(*) FROM {table} WHERE {clause}",
                                         (user_id,) * clause.count("?")).fetchone()[0]
        return counts

    return await services.db.run(count)


async def test_forget_reports_counts_and_leaves_nothing(services):
    outcome = await services.training.start(requester(ALICE), TrainRequest(
        trigger="rraj", uploads=(Upload("a.jpg", astronaut_jpeg()), Upload("c.jpg", camera_jpeg()))))
    subject = await services.db.run(get_subject, outcome.subject.subject_id)
    await services.db.run(give_adapter, services.store, subject)
    await services.sharing.share(requester(ALICE), "rraj", user_id=BOB)
    await services.imagine.imagine(requester(BOB), ImagineOptions("rraj person"))  # Bob's picture of Alice
    await services.imagine.imagine(requester(ALICE), ImagineOptions("rraj person"))
    await services.account.export(requester(ALICE), "rraj")

    report = await services.account.forget(requester(ALICE))
    assert not report.nothing_stored and not report.finishing
    assert (report.subjects, report.photos, report.adapters, report.grants) == (1, 2, 1, 1)
    assert report.generations == 2  # hers, and Bob's picture of her (deleted too)
    assert report.jobs_stopped == 2  # her training job and her generation
    assert set((await footprint(services, ALICE)).values()) == {0}
    assert services.store.list_files("users/101") == []
    bob_generations = await services.db.run(lambda c: c.execute(
        "SELECT count(*) FROM generations WHERE user_id = ?", (BOB,)).fetchone()[0])
    assert bob_generations == 0  # a picture showing Alice goes too
    again = await services.account.forget(requester(ALICE))
    assert again.nothing_stored


async def test_forget_while_a_job_runs_finishes_after_it_stops(services):
    subject = await services.db.run(add_subject, ALICE, "rraj")
    await services.db.run(give_adapter, services.store, subject)
    await services.imagine.imagine(requester(ALICE), ImagineOptions("rraj person"))
    job = await services.db.run(claim_next_job, "worker-1", 60)
    report = await services.account.forget(requester(ALICE))
    assert report.finishing and report.jobs_stopped == 1
    assert (await footprint(services, ALICE))["users"] == 1
    await services.db.run(finish_job, job.id, "worker-1", "cancelled")
    assert await services.db.run(sweep_forgotten, services.store) == [ALICE]
    assert set((await footprint(services, ALICE)).values()) == {0}
    assert services.store.list_files("users/101") == []
