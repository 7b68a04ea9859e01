"""/status, /cancel, the admin queue, style LoRAs and limits."""

from __future__ import annotations

import struct

import pytest

from bot.services import ImagineOptions, Upload
from bot.services.training import TrainRequest
from storage import generations, jobs
from storage.files import style_key
from tests.bot.services.conftest import (
    ADMIN,
    add_fake_photos,
    add_subject,
    give_adapter,
    lora_file_bytes,
    refused,
    requester,
)

ALICE, BOB = 101, 202


async def test_status_shows_my_jobs_with_positions_and_triggers(services):
    subject = await services.db.run(add_subject, ALICE, "rraj")
    await services.db.run(add_fake_photos, subject, 2)
    await services.db.run(give_adapter, services.store, subject)
    trained = await services.training.start(requester(ALICE), TrainRequest(subject="rraj"))
    queued = await services.imagine.imagine(requester(ALICE), ImagineOptions("rraj person"))
    await services.imagine.imagine(requester(BOB), ImagineOptions("a lighthouse"))

    views = await services.jobs.status(requester(ALICE))
    assert {v.job_id for v in views} == {trained.job_id, queued.job_id}
    by_id = {v.job_id: v for v in views}
    assert by_id[queued.job_id].position == 1 and by_id[queued.job_id].generation_id == queued.generation_id
    assert by_id[trained.job_id].position == 3  # generation jobs run before training
    assert by_id[trained.job_id].triggers == ("rraj",) and by_id[queued.job_id].triggers == ("rraj",)


async def test_cancel_own_jobs_only(services):
    mine = await services.imagine.imagine(requester(ALICE), ImagineOptions("a lighthouse"))
    newest = await services.imagine.imagine(requester(ALICE), ImagineOptions("a tower"))
    theirs = await services.imagine.imagine(requester(BOB), ImagineOptions("a bridge"))
    error = await refused(services.jobs.cancel(requester(ALICE), theirs.job_id))
    assert error.code == "no_job" and (await services.db.run(jobs.get_job, theirs.job_id)).state == "queued"

    which = await refused(services.jobs.cancel(requester(ALICE)))  # two jobs: it asks which, cancels neither
    assert which.code == "which_job" and f"#{mine.job_id}" in which.message and f"#{newest.job_id}" in which.message
    assert "a tower" in which.message and f"/cancel job:{newest.job_id}" in which.message
    assert {(await services.db.run(jobs.get_job, j)).state for j in (mine.job_id, newest.job_id)} == {"queued"}
    assert (await services.jobs.cancel(requester(ALICE), newest.job_id)).job_id == newest.job_id
    outcome = await services.jobs.cancel(requester(ALICE))  # the only one left: cancelled, and named
    assert outcome.job_id == mine.job_id and outcome.result == "cancelled" and outcome.label == '"a lighthouse"'
    await services.imagine.imagine(requester(ALICE), ImagineOptions("a lighthouse"))
    assert (await refused(services.jobs.cancel(requester(ALICE), mine.job_id))).code == "job_finished"
    await services.jobs.cancel(requester(ALICE))
    assert (await refused(services.jobs.cancel(requester(ALICE)))).code == "no_jobs"
    await services.db.run(jobs.claim_next_job, "worker-1", 60)
    assert (await services.jobs.cancel(requester(BOB), theirs.job_id)).result == "requested"


async def test_the_whole_queue_is_for_admins(services):
    await services.imagine.imagine(requester(ALICE), ImagineOptions("a lighthouse"))
    await services.imagine.imagine(requester(BOB), ImagineOptions("a tower"))
    assert (await refused(services.jobs.queue(requester(ALICE)))).code == "admins_only"
    assert {v.user_id for v in await services.jobs.queue(requester(ADMIN))} == {ALICE, BOB}


async def test_admin_installs_a_style_lora_that_parses(services):
    data = lora_file_bytes()
    info = await services.admin.add_style(requester(ADMIN), "Pixel-Art", Upload("pixel.safetensors", data), 0.7)
    assert (info.name, info.family, info.weight, info.tensors) == ("pixel-art", "tiny-sd15", 0.7, 2)
    style = await services.db.run(generations.get_style, "pixel-art")
    assert style.path == style_key(info.sha256) and services.store.read_bytes(style.path) == data
    assert await services.imagine.style_choices("") == ["pixel-art"]
    await services.admin.remove_style(requester(ADMIN), "pixel-art")
    assert not services.store.exists(style.path) and await services.imagine.style_choices("") == []


def safetensors_bytes(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


@pytest.mark.parametrize("filename, data, words", [
    ("style.safetensors", b"", "too short"),
    ("style.safetensors", b"\xff" * 64, "header length"),
    ("style.safetensors", safetensors_bytes(b"not json!"), "not valid JSON"),
    ("style.safetensors", safetensors_bytes(b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}',
                                            bytes(8)), "no LoRA weights"),
    ("style.safetensors", safetensors_bytes(b'{"x.lora_A": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}',
                                            bytes(8)), "do not match its data"),
    ("style.safetensors", lora_file_bytes()[:-4], "do not match its data"),
    ("style.safetensors", lora_file_bytes() + bytes(4), "do not match its data"),
    ("style.safetensors", safetensors_bytes(b"{}"), "no tensors"),
    # Two tensors over the same bytes: safetensors rejects it (a hand-written check once let it through).
    ("style.safetensors", safetensors_bytes(b'{"a.lora_A": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},'
                                            b' "b.lora_B": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}',
                                            bytes(8)), "do not match its data"),
    ("style.safetensors", safetensors_bytes(b'{"a.lora_A": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}',
                                            bytes(8)), "not valid JSON"),
    ("style.ckpt", lora_file_bytes(), ".safetensors"),
])
async def test_bad_style_files_are_refused_and_nothing_is_stored(services, filename, data, words):
    error = await refused(services.admin.add_style(requester(ADMIN), "pixel", Upload(filename, data)))
    assert error.code == "bad_style_file" and words in error.message
    assert services.store.list_files() == []


async def test_a_bf16_style_lora_is_accepted(services):
    header = (b'{"a.lora_up.weight": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},'
              b' "a.lora_down.weight": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [8, 16]}}')
    info = await services.admin.add_style(requester(ADMIN), "soft", Upload("soft.safetensors",
                                                                          safetensors_bytes(header, bytes(16))))
    assert (info.name, info.tensors) == ("soft", 2)


async def test_style_admin_rules(services):
    upload = Upload("pixel.safetensors", lora_file_bytes())
    assert (await refused(services.admin.add_style(requester(ALICE), "pixel", upload))).code == "admins_only"
    for name in ("p", "pixel art", "../x", "x" * 33):
        assert (await refused(services.admin.add_style(requester(ADMIN), name, upload))).code == "bad_style_name"
    assert (await refused(services.admin.add_style(requester(ADMIN), "pixel", upload, 5))).code == "bad_style_weight"
    assert (await refused(services.admin.remove_style(requester(ADMIN), "nope"))).code == "unknown_style"


async def test_limits_show_settings_and_my_usage(services):
    await services.imagine.imagine(requester(ALICE), ImagineOptions("a lighthouse"))
    limits = await services.admin.limits(requester(ALICE))
    assert not limits.is_admin and limits.queued_generations == 1 and limits.max_training_jobs_per_user == 1
    assert (await services.admin.limits(requester(ADMIN))).is_admin
