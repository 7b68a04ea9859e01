"""`generate` jobs end to end: a real SQLite database and file store, a real Worker, the tiny SD 1.5 model."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from storage import consent, generations, jobs
from storage.files import generation_root
from storage.forget import tombstone_user
from tests.trainer.serving_fixtures import (  # noqa: F401 (fixtures)
    lora_factory, make_world, pixels, serving_models_dir, one_torch_thread,
)
from trainer.serving import job as job_module
from trainer.serving import kinds
from trainer.serving.cards import card_layout
from trainer.serving.pngmeta import parse_parameters, read_parameters
from trainer.serving.requests import CONSENT_MESSAGE

OWNER, FRIEND = 101, 202


@pytest.fixture
def world(tmp_path, serving_models_dir, lora_factory):  # noqa: F811
    return make_world(tmp_path, serving_models_dir, lora_factory, prompt_blocklist=["zombie"])


@pytest.fixture
def rraj(world):
    return world.subject_with_adapter(OWNER, "rraj", seed=1)


def image_at(world, key: str) -> Image.Image:
    with Image.open(io.BytesIO(world.store.read_bytes(key))) as image:
        image.load()
        return image


def params_of(world, key: str) -> dict[str, str]:
    return parse_parameters(read_parameters(world.store.read_bytes(key)))


def test_imagine_two_images_gives_a_grid_and_two_singles_with_metadata(world, rraj):
    gen_id, job_id = world.queue(OWNER, "imagine", "a photo of rraj person", [rraj], seed=40, count=2)
    job = world.run(job_id)
    assert job.state == "succeeded", job.error
    result = job.result
    root = generation_root(OWNER, gen_id)
    assert result["outputs"] == [f"{root}/1.png", f"{root}/2.png"] and result["grid"] == f"{root}/grid.png"
    assert result["seed"] == 40 and result["contact_sheet"] is None
    assert generations.get_generation(world.conn, gen_id).outputs == result["outputs"]
    assert image_at(world, result["grid"]).size == (64 * 2 + 4, 64)
    first, second = (params_of(world, key) for key in result["outputs"])
    assert (first["Seed"], second["Seed"]) == ("40", "41")
    assert first["Sampler"] == "Euler" and first["Size"] == "64x64" and first["Model"] == "tiny-sd15"
    assert "<lora:rraj:1>" in first["Prompt"] and first["Lora hashes"].startswith("rraj: ")
    assert not np.array_equal(pixels(world.store.read_bytes(result["outputs"][0])),
                              pixels(world.store.read_bytes(result["outputs"][1])))
    assert job.total > 0 and job.step == job.total


def test_a_style_adapter_is_composed_and_a_removed_style_is_left_out_with_a_warning(world, rraj):
    from storage.files import sha256_file, style_key

    source = world.lora_factory(21)
    digest = sha256_file(source)
    world.store.import_file(source, style_key(digest))
    style = generations.add_style(world.conn, name="pixel art", family="tiny-sd15", path=style_key(digest),
                                  sha256=digest, weight=0.8, added_by=None)
    entry = {"kind": "style", "style_id": style.id, "name": "pixel art", "weight": 0.8}
    gen_id, job_id = world.queue(OWNER, "imagine", "rraj person", [rraj], seed=3)
    styled_id, styled_job = world.queue(OWNER, "imagine", "rraj person", [rraj], seed=3, style="pixel art")
    world.conn.execute("UPDATE generations SET adapters = json_insert(adapters, '$[#]', json(?)) WHERE id = ?",
                       (json.dumps(entry), styled_id))
    world.worker.run(until_idle=True)
    plain, styled = (jobs.get_job(world.conn, j).result["outputs"][0] for j in (job_id, styled_job))
    assert not np.array_equal(pixels(world.store.read_bytes(plain)), pixels(world.store.read_bytes(styled)))
    assert "pixel_art: " in params_of(world, styled)["Lora hashes"]
    generations.delete_style(world.conn, "pixel art")
    again_id, again_job = world.queue(OWNER, "imagine", "rraj person", [rraj], seed=3)
    world.conn.execute("UPDATE generations SET adapters = json_insert(adapters, '$[#]', json(?)) WHERE id = ?",
                       (json.dumps(entry), again_id))
    job = world.run(again_job)
    assert job.state == "succeeded" and any("pixel art" in w for w in job.result["warnings"])
    assert np.array_equal(pixels(world.store.read_bytes(job.result["outputs"][0])),
                          pixels(world.store.read_bytes(plain)))
    server = job_module.generation_server(world.worker)
    assert all(not key.startswith("style") for key in server.runtime().adapters.keys())  # evicted from memory


def test_reroll_variation_and_upscale_from_a_stored_parent(world, rraj):
    parent_id, job_id = world.queue(OWNER, "imagine", "a photo of rraj person", [rraj], seed=5, count=2)
    assert world.run(job_id).state == "succeeded"
    reroll_id, reroll_job = world.queue(OWNER, "reroll", "a photo of rraj person", [rraj], seed=99, count=1,
                                        parent_id=parent_id)
    variation_id, variation_job = world.queue(OWNER, "variation", "a photo of rraj person", [rraj], seed=77,
                                              count=1, parent_id=parent_id, source_index=1, strength=0.6)
    upscale_id, upscale_job = world.queue(OWNER, "upscale", "a photo of rraj person", [rraj], seed=5, count=1,
                                          parent_id=parent_id, source_index=0, scale=2.0, strength=0.5)
    world.worker.run(until_idle=True)
    for job_id in (reroll_job, variation_job, upscale_job):
        assert jobs.get_job(world.conn, job_id).state == "succeeded", jobs.get_job(world.conn, job_id).error
    reroll = jobs.get_job(world.conn, reroll_job).result
    assert reroll["seed"] == 99 and len(reroll["outputs"]) == 1 and reroll["grid"] is None
    variation_key = jobs.get_job(world.conn, variation_job).result["outputs"][0]
    assert params_of(world, variation_key)["Denoising strength"] == "0.6"
    upscaled_key = jobs.get_job(world.conn, upscale_job).result["outputs"][0]
    assert image_at(world, upscaled_key).size == (128, 128)
    meta = params_of(world, upscaled_key)
    assert meta["Hires upscale"] == "2" and meta["Size"] == "128x128"
    source = pixels(world.store.read_bytes(generations.get_generation(world.conn, parent_id).outputs[1]))
    varied = pixels(world.store.read_bytes(variation_key))
    assert not np.array_equal(source, varied)


def test_headshots_give_one_picture_per_prompt_and_a_contact_sheet(world, rraj):
    prompts = [f"professional headshot of rraj person, {place}" for place in ("studio grey backdrop",
               "office window light", "outdoor bokeh")]
    gen_id, job_id = world.queue(OWNER, "headshots", "professional headshots of rraj person", [rraj],
                                 headshot_prompts=prompts, aspect="portrait", width=48, height=64)
    job = world.run(job_id)
    assert job.state == "succeeded", job.error
    assert len(job.result["outputs"]) == 3 and job.result["grid"] is None
    sheet = image_at(world, job.result["contact_sheet"])
    assert sheet.width > 3 * 256
    assert [params_of(world, key)["Prompt"].split(" <lora")[0] for key in job.result["outputs"]] == prompts
    assert image_at(world, job.result["outputs"][0]).size == (48, 64)


@pytest.mark.parametrize("layout", ["portrait", "landscape", "border"])
def test_card_job_typesets_the_greeting_in_each_layout(world, rraj, layout):
    size = {"portrait": (64, 64), "landscape": (48, 64), "border": (64, 48)}[layout]  # each layout's picture shape
    gen_id, job_id = world.queue(OWNER, "card", "rraj person by a fireplace", [rraj], greeting="Happy holidays!",
                                 layout=layout, width=size[0], height=size[1])
    job = world.run(job_id)
    assert job.state == "succeeded", job.error
    key = job.result["outputs"][0]
    assert world.store.size(key) < 10 * 1024 * 1024
    card = image_at(world, key)
    spec = card_layout(layout, kinds.CARD_LONG_SIDE, size)
    assert card.size == spec.size
    box = np.asarray(card.convert("RGB")).astype(int)[spec.text.top:spec.text.bottom, spec.text.left:spec.text.right]
    assert (np.abs(box - np.array(spec.ink)).sum(axis=2) < 60).sum() > 1000
    assert params_of(world, key)["Card layout"] == layout


def test_two_people_compose_both_adapters_and_warn_when_faces_are_not_found(world, rraj):
    ssam = world.subject_with_adapter(FRIEND, "ssam", seed=2)
    world.share(ssam[0].id, OWNER)
    active: list[list[str]] = []
    server = job_module.generation_server(world.worker)
    original = server.runtime().text2img

    def recording(sampling, on_step=None):
        active.append(sorted(server.runtime().active_adapters()))
        return original(sampling, on_step)

    server.runtime().text2img = recording
    gen_id, job_id = world.queue(OWNER, "imagine", "rraj person and ssam person skiing", [rraj, ssam])
    job = world.run(job_id)
    assert job.state == "succeeded", job.error
    assert len(active) == 1 and len(active[0]) == 2  # both likenesses composed
    assert any("faces could be found" in warning for warning in job.result["warnings"])
    assert "Face refine" in params_of(world, job.result["outputs"][0])


def test_revoked_grant_stops_a_queued_job_without_files(world, rraj):
    world.share(rraj[0].id, FRIEND)
    gen_id, job_id = world.queue(FRIEND, "imagine", "rraj person on the moon", [rraj])
    consent.revoke_access(world.conn, rraj[0].id, user_id=FRIEND)
    job = world.run(job_id)
    assert job.state == "failed" and job.error == CONSENT_MESSAGE
    assert "rraj" not in job.error and world.store.list_files(generation_root(FRIEND, gen_id)) == []


def test_a_forgotten_subject_can_never_be_used_again(world, rraj):
    world.share(rraj[0].id, FRIEND)
    warm_gen, warm_job = world.queue(FRIEND, "imagine", "rraj person", [rraj])
    assert world.run(warm_job).state == "succeeded"  # the adapter is now cached in the worker
    gen_id, job_id = world.queue(FRIEND, "imagine", "rraj person again", [rraj])
    tombstone_user(world.conn, OWNER)
    job = world.run(job_id)
    assert job.state == "failed" and job.error == CONSENT_MESSAGE
    assert world.store.list_files(generation_root(FRIEND, gen_id)) == []
    server = job_module.generation_server(world.worker)
    assert server.cached_adapter_ids() == []  # its weights left the worker's memory too


def test_consent_revoked_while_rendering_removes_what_was_written(world, rraj, monkeypatch):
    world.share(rraj[0].id, FRIEND)
    gen_id, job_id = world.queue(FRIEND, "imagine", "rraj person", [rraj], count=2)
    original = kinds.Renderer.render

    def render_then_revoke(self):
        rendered = original(self)
        consent.revoke_access(world.conn, rraj[0].id, user_id=FRIEND)
        return rendered

    monkeypatch.setattr(kinds.Renderer, "render", render_then_revoke)
    job = world.run(job_id)
    assert job.state == "failed" and job.error == CONSENT_MESSAGE
    assert world.store.list_files(generation_root(FRIEND, gen_id)) == []
    assert generations.get_generation(world.conn, gen_id).outputs == []


def test_a_generation_deleted_meanwhile_leaves_no_files(world, rraj, monkeypatch):
    gen_id, job_id = world.queue(OWNER, "imagine", "rraj person", [rraj], count=2)
    original = kinds.Renderer.render

    def render_then_delete(self):
        rendered = original(self)
        generations.delete_generation(world.conn, gen_id)
        return rendered

    monkeypatch.setattr(kinds.Renderer, "render", render_then_delete)
    assert world.run(job_id).state == "cancelled"
    assert world.store.list_files(generation_root(OWNER, gen_id)) == []
    gone_id, gone_job = world.queue(OWNER, "imagine", "rraj person", [rraj])
    generations.delete_generation(world.conn, gone_id)
    assert world.run(gone_job).state == "cancelled"


def test_cancel_stops_between_images_and_writes_nothing(world, rraj, monkeypatch):
    steps_seen = []

    class CancelAfterFirstStep(kinds.RenderProgress):
        def on_step(self, pipe, step):
            steps_seen.append(step)
            self.stop_reason = lambda: "cancel"
            super().on_step(pipe, step)

    monkeypatch.setattr(job_module, "RenderProgress", CancelAfterFirstStep)
    gen_id, job_id = world.queue(OWNER, "imagine", "rraj person", [rraj], count=4, steps=3)
    assert world.run(job_id).state == "cancelled"
    assert len(steps_seen) == 1  # the pipeline stopped at the next step, and no other image started
    assert world.store.list_files(generation_root(OWNER, gen_id)) == []


def test_a_full_disk_fails_the_job_with_a_reason_and_leaves_no_partial_outputs(world, rraj, monkeypatch):
    import errno

    gen_id, job_id = world.queue(OWNER, "imagine", "rraj person", [rraj], count=2)
    original, calls = world.store.write_bytes, []

    def fill_up(rel, data):
        calls.append(rel)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(rel, data)

    monkeypatch.setattr(world.store, "write_bytes", fill_up)
    job = world.run(job_id)
    assert job.state == "failed" and job.error == job_module.DISK_FULL
    assert world.store.list_files(generation_root(OWNER, gen_id)) == []
    assert generations.get_generation(world.conn, gen_id).outputs == []


def test_blocklist_is_checked_again_in_the_worker(world, rraj):
    gen_id, job_id = world.queue(OWNER, "imagine", "rraj person as a ZOMBIE", [rraj])
    job = world.run(job_id)
    assert job.state == "failed" and "zombie" in job.error
    assert world.store.list_files(generation_root(OWNER, gen_id)) == []


def test_safety_filter_withholds_flagged_pictures(tmp_path, serving_models_dir, lora_factory):  # noqa: F811
    from tests.trainer.test_serving_parts import tiny_safety_checker

    checker = tiny_safety_checker(tmp_path / "checker", flag_everything=True)
    world = make_world(tmp_path, serving_models_dir, lora_factory)
    world.worker.settings = world.settings.model_copy(update={"safety_checker_path": checker})
    gen_id, job_id = world.queue(OWNER, "imagine", "a landscape", [], count=1)
    job = world.run(job_id)
    assert job.state == "failed" and "safety filter" in job.error
    assert world.store.list_files(generation_root(OWNER, gen_id)) == []


def test_bad_params_and_missing_parents_fail_with_a_sentence(world, rraj):
    _, steps_job = world.queue(OWNER, "imagine", "rraj person", [rraj], steps=10_000)
    _, orphan_job = world.queue(OWNER, "variation", "rraj person", [rraj], parent_id=None, strength=0.5)
    world.worker.run(until_idle=True)
    assert "steps" in jobs.get_job(world.conn, steps_job).error
    assert "starts from was deleted" in jobs.get_job(world.conn, orphan_job).error


def test_class_images_job_uses_the_resident_pipeline(world):
    payload = {"family": "tiny-sd15", "base_model": "tiny-sd15", "class_prompt": "a photo of a person",
               "resolution": 64, "count": 2}
    job_id = jobs.enqueue_job(world.conn, "class_images", payload)
    job = world.run(job_id)
    assert job.state == "succeeded" and job.result == {"count": 2, "generated": 2}
    assert job_module.generation_server(world.worker).pipeline_loads == 1
    again = jobs.enqueue_job(world.conn, "class_images", payload)
    assert world.run(again).result["generated"] == 0
