"""Evaluation inside the real train job, through the Worker: metrics on the adapter row and in the job result, the
plot in the adapter's folder, and an evaluation failure that keeps the adapter."""

import io

import pytest
from PIL import Image

from storage import adapters, files, jobs
from storage.db import connect
from storage.files import FileStore
from storage.settings import Settings
from tests.trainer.evaluation_fixtures import tiny_clip_path  # noqa: F401 (fixture)
from tests.trainer.job_fixtures import WorkerWorld, add_subject
from trainer.handlers import HANDLERS
from trainer.worker import Worker

FAST = {"steps": 4, "num_class_images": 2, "checkpoint_every": 0, "preview_every": 2}


def _world(tmp_path, **settings) -> WorkerWorld:
    config = Settings(data_dir=tmp_path, worker_poll_s=0.05, **settings)
    return WorkerWorld(config, connect(config.database_path), FileStore(config.store_dir))


def _run_one_job(world):
    subject = add_subject(world, 1, "rraj")
    payload = {"subject_ids": [subject.id], "family": world.settings.model_family,
               "base_model": world.settings.base_model_id, "overrides": FAST}
    job_id = jobs.enqueue_job(world.conn, "train", payload, user_id=1)
    Worker(world.settings, HANDLERS, owner="w").run(until_idle=True)
    job = jobs.get_job(world.conn, job_id)
    assert job.state == "succeeded", job.error
    return job, adapters.get_adapter(world.conn, job.result["adapter_id"])


def _assert_plot_beside_the_adapter(world, job, adapter):
    plot = job.result["plot_path"]
    assert plot == files.adapter_root(1, job.id) + "/training.png"
    assert plot.rsplit("/", 1)[0] == adapter.path.rsplit("/", 1)[0]  # exported with the adapter
    with Image.open(io.BytesIO(world.store.read_bytes(plot))) as image:
        assert image.format == "PNG"


@pytest.mark.slow
def test_metrics_are_stored_on_the_adapter_and_returned_with_the_job(tmp_path, tiny_clip_path):  # noqa: F811
    world = _world(tmp_path, clip_model_path=str(tiny_clip_path), evaluation_seeds=1)
    job, adapter = _run_one_job(world)
    metrics = job.result["metrics"]
    assert metrics == adapter.metrics  # the row and the result agree
    assert metrics["drift"] >= 0 and "subject_fidelity" in metrics and "label" in metrics
    assert metrics["fidelity_method"].startswith("face identity")  # on by default, ahead of CLIP
    assert -1 <= metrics["prompt_fidelity"] <= 1  # the configured CLIP model was used
    assert metrics["prompt_fidelity_method"].startswith("CLIP-T")
    assert metrics["evaluation"]["seeds"] == [9001]
    _assert_plot_beside_the_adapter(world, job, adapter)


@pytest.mark.slow
def test_a_failing_evaluation_keeps_the_adapter(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the evaluation model exploded")

    monkeypatch.setattr("trainer.evaluation.job.evaluate_adapter", broken)
    world = _world(tmp_path)
    job, adapter = _run_one_job(world)
    assert world.store.exists(adapter.path) and world.store.sha256(adapter.path) == adapter.sha256
    assert set(adapter.metrics) == {"error"} and "saved" in adapter.metrics["error"]
    assert "exploded" not in adapter.metrics["error"]  # no internals shown to users
    assert job.result["metrics"] == adapter.metrics
    _assert_plot_beside_the_adapter(world, job, adapter)  # the plot needs no images, so it is still there
