"""The train job through the real worker: storage in, adapter in the store and its row out."""

import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from storage import adapters, files, jobs, subjects
from storage.forget import tombstone_user
from tests.trainer.job_fixtures import add_subject, make_world
from trainer.handlers import HANDLERS
from trainer.worker import Worker

FAST = {"steps": 4, "num_class_images": 2, "checkpoint_every": 2, "preview_every": 2}


def _enqueue(world, subject_ids, user_id=1, **overrides):
    payload = {"subject_ids": subject_ids, "family": world.settings.model_family,
               "base_model": world.settings.base_model_id, "overrides": {**FAST, **overrides}}
    return jobs.enqueue_job(world.conn, "train", payload, user_id=user_id)


@pytest.mark.slow
def test_train_job_stores_an_adapter_and_records_it(tmp_path):
    world = make_world(tmp_path)
    subject = add_subject(world, 1, "rraj")
    job_id = _enqueue(world, [subject.id])
    Worker(world.settings, HANDLERS, owner="w").run(until_idle=True)
    job = jobs.get_job(world.conn, job_id)
    assert job.state == "succeeded", job.error
    adapter = adapters.get_adapter(world.conn, job.result["adapter_id"])
    assert adapter.subject_ids == (subject.id,) and adapter.version == 1
    assert world.store.sha256(adapter.path) == adapter.sha256
    keys = load_file(world.store.resolve(adapter.path))
    assert keys and all("lora" in key for key in keys)
    assert adapter.params["triggers"] == ["rraj"] and adapter.params["steps"] == 4
    root = files.job_root(1, job_id)
    assert not world.store.exists(root + "/checkpoints")  # scratch removed after success
    assert job.result["preview_path"] and world.store.exists(job.result["preview_path"])
    assert (job.step, job.total) == (4, 4)


@pytest.mark.slow
def test_a_family_adapter_learns_several_subjects(tmp_path):
    world = make_world(tmp_path)
    a = add_subject(world, 1, "jrus")
    b = add_subject(world, 1, "arus", class_noun="woman")
    job_id = _enqueue(world, [a.id, b.id])
    Worker(world.settings, HANDLERS, owner="w").run(until_idle=True)
    job = jobs.get_job(world.conn, job_id)
    assert job.state == "succeeded", job.error
    adapter = adapters.get_adapter(world.conn, job.result["adapter_id"])
    assert adapter.subject_ids == (a.id, b.id)
    assert adapter.params["triggers"] == ["jrus", "arus"]


def test_a_job_whose_subject_was_deleted_fails_plainly(tmp_path):
    world = make_world(tmp_path)
    subjects.ensure_user(world.conn, 1, "ann")
    job_id = _enqueue(world, [999])
    Worker(world.settings, HANDLERS, owner="w").run(until_idle=True)
    job = jobs.get_job(world.conn, job_id)
    assert job.state == "failed" and "deleted" in job.error


def test_a_bad_override_is_rejected_before_training(tmp_path):
    world = make_world(tmp_path)
    subject = add_subject(world, 1, "rraj")
    job_id = _enqueue(world, [subject.id], rank=0)
    Worker(world.settings, HANDLERS, owner="w").run(until_idle=True)
    job = jobs.get_job(world.conn, job_id)
    assert job.state == "failed" and "rank" in job.error


@pytest.mark.slow
def test_forget_during_training_keeps_no_adapter(tmp_path):
    world = make_world(tmp_path)
    subject = add_subject(world, 1, "rraj")
    job_id = _enqueue(world, [subject.id], steps=6)
    worker = Worker(world.settings, HANDLERS, owner="w")
    original = worker.serve_waiting_generations

    def forget_mid_training():
        if jobs.get_job(world.conn, job_id).step >= 2 and not subject_forgotten[0]:
            tombstone_user(world.conn, 1)
            subject_forgotten[0] = True
        return original()

    subject_forgotten = [False]
    worker.serve_waiting_generations = forget_mid_training
    worker.run(until_idle=True)
    job = jobs.get_job(world.conn, job_id)
    assert job.state == "cancelled"
    assert world.conn.execute("SELECT count(*) FROM adapters").fetchone()[0] == 0
    assert not world.store.exists(files.adapter_root(1, job_id))


def _wait_for_step(world, job_id, step, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get_job(world.conn, job_id)
        if job.step >= step or job.finished:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach step {step}")


def _worker_process(world, owner):
    env = {**os.environ, **world.settings.worker_env(), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "trainer", "--owner", owner, "--until-idle"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_9_mid_training_resumes_from_the_checkpoint_with_identical_weights(tmp_path):
    # Reference: one uninterrupted run.
    reference = make_world(tmp_path / "reference", worker_lease_s=2.0)
    ref_subject = add_subject(reference, 1, "rraj")
    ref_job = _enqueue(reference, [ref_subject.id], steps=8)
    Worker(reference.settings, HANDLERS, owner="w").run(until_idle=True)
    ref_adapter = adapters.get_adapter(reference.conn, jobs.get_job(reference.conn, ref_job).result["adapter_id"])

    world = make_world(tmp_path / "killed", worker_lease_s=2.0)
    subject = add_subject(world, 1, "rraj")
    job_id = _enqueue(world, [subject.id], steps=8)
    first = _worker_process(world, "first")
    _wait_for_step(world, job_id, 5)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(2.5)  # let the lease run out, as after a real crash
    second = _worker_process(world, "second")
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err.decode()[-2000:]
    job = jobs.get_job(world.conn, job_id)
    assert job.state == "succeeded", job.error
    assert job.attempts == 2
    adapter = adapters.get_adapter(world.conn, job.result["adapter_id"])
    ours = load_file(world.store.resolve(adapter.path))
    theirs = load_file(reference.store.resolve(ref_adapter.path))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert (ours[key] == theirs[key]).all(), key


@pytest.mark.slow
def test_on_a_small_gpu_training_steps_aside_for_a_generation_and_resumes(tmp_path):
    from storage import generations

    world = make_world(tmp_path, gpu_sharing="exclusive", preempt_min_interval_s=0)
    subject = add_subject(world, 1, "rraj")
    train_id = _enqueue(world, [subject.id], steps=6)
    worker = Worker(world.settings, HANDLERS, owner="w")
    queued, checks = {}, []
    original = worker.should_yield_gpu

    def queue_a_picture_at_step_two():
        # Counted here, not read from the job row: the row's step is written by the heartbeat, which a fast
        # machine can outrun.
        checks.append(1)
        if not queued and len(checks) >= 2:
            gen_id = generations.create_generation(
                world.conn, user_id=1, kind="imagine", prompt="a photo of a lighthouse", negative_prompt="",
                seed=3, params={"width": 64, "height": 64, "steps": 2, "guidance": 5.0, "scheduler": "pndm",
                                "count": 1, "aspect": "square"},
                adapters=[], subject_ids=[])
            queued["job"] = jobs.enqueue_job(world.conn, "generate", {"generation_id": gen_id}, user_id=1)
            worker._last_preempt_check = 0
        return original()

    worker.should_yield_gpu = queue_a_picture_at_step_two
    worker.run(until_idle=True)
    train, picture = jobs.get_job(world.conn, train_id), jobs.get_job(world.conn, queued["job"])
    assert picture.state == "succeeded", picture.error
    assert train.state == "succeeded", train.error
    assert picture.finished_at < train.finished_at  # the picture did not wait for the whole training run
    assert train.attempts == 1 and train.step == 6


@pytest.mark.slow
def test_a_full_disk_fails_the_job_plainly_and_leaves_no_partial_adapter(tmp_path, monkeypatch):
    import errno

    from storage import photos as photo_rows
    from trainer import train_job

    world = make_world(tmp_path)
    subject = add_subject(world, 1, "rraj")
    before = {p: world.store.read_bytes(p) for p in world.store.list_files()}
    job_id = _enqueue(world, [subject.id])
    real_store_adapter = train_job.store_adapter

    def store_on_a_full_disk(ctx, plan, config, result):
        def no_space(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", no_space)
        try:
            return real_store_adapter(ctx, plan, config, result)
        finally:
            monkeypatch.undo()

    monkeypatch.setattr(train_job, "store_adapter", store_on_a_full_disk)
    Worker(world.settings, HANDLERS, owner="w").run(until_idle=True)
    job = jobs.get_job(world.conn, job_id)
    assert job.state == "failed" and job.error == train_job.DISK_FULL
    assert world.conn.execute("SELECT count(*) FROM adapters").fetchone()[0] == 0
    assert not world.store.list_files(files.adapter_root(1, job_id))
    assert not [p for p in world.store.root.rglob("*") if ".tmp-" in p.name]
    for path, data in before.items():  # the photos are untouched
        assert world.store.read_bytes(path) == data
    assert len(photo_rows.accepted_photos(world.conn, subject.id)) == 2
