"""An unshare during a render stops it within one denoising step, as a cancel does, and writes nothing."""

from __future__ import annotations

import pytest

from storage import consent, jobs
from storage.files import generation_root
from tests.trainer.serving_fixtures import (  # noqa: F401 (fixtures)
    lora_factory, make_world, one_torch_thread, serving_models_dir,
)
from trainer.serving import job as job_module
from trainer.serving import kinds
from trainer.serving.requests import CONSENT_MESSAGE

OWNER, FRIEND = 101, 202


@pytest.fixture
def world(tmp_path, serving_models_dir, lora_factory):  # noqa: F811
    return make_world(tmp_path, serving_models_dir, lora_factory)


def test_an_unshare_mid_render_stops_within_one_step(world, monkeypatch):
    rraj = world.subject_with_adapter(OWNER, "rraj", seed=1)
    world.share(rraj[0].id, FRIEND)
    steps_seen = []

    class UnshareAtFirstStep(kinds.RenderProgress):
        def on_step(self, pipe, step):
            steps_seen.append(step)
            if len(steps_seen) == 1:  # the owner unshares while the picture is being drawn
                consent.revoke_access(world.conn, rraj[0].id, user_id=FRIEND)
            super().on_step(pipe, step)

    monkeypatch.setattr(job_module, "RenderProgress", UnshareAtFirstStep)
    gen_id, job_id = world.queue(FRIEND, "imagine", "rraj person", [rraj], count=3, steps=6)
    job = world.run(job_id)
    assert job.state == "failed" and job.error == CONSENT_MESSAGE
    assert len(steps_seen) == 1  # stopped before the second step; no other picture started
    assert world.store.list_files(generation_root(FRIEND, gen_id)) == []


def test_the_owner_rendering_is_not_stopped_by_the_consent_check(world, monkeypatch):
    rraj = world.subject_with_adapter(OWNER, "rraj", seed=1)
    steps_seen = []

    class CountSteps(kinds.RenderProgress):
        def on_step(self, pipe, step):
            steps_seen.append(step)
            super().on_step(pipe, step)

    monkeypatch.setattr(job_module, "RenderProgress", CountSteps)
    _, job_id = world.queue(OWNER, "imagine", "rraj person", [rraj], count=1, steps=3)
    assert world.run(job_id).state == "succeeded"
    assert len(steps_seen) == 3
    assert jobs.get_job(world.conn, job_id).error is None
