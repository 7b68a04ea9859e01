"""The worker loop: claiming, leases, progress, cancel, shutdown and preemption by generation jobs."""

import threading
import time

from storage import jobs
from storage.db import connect
from storage.settings import Settings
from trainer.__main__ import build_worker
from trainer.handlers import HANDLERS, IDLE_TASKS
from trainer.job_api import JobError, JobOutcome
from trainer.worker import Worker


def _settings(tmp_path, **extra) -> Settings:
    return Settings(data_dir=tmp_path, worker_lease_s=extra.pop("worker_lease_s", 5.0), worker_poll_s=0.05, **extra)


def test_runs_jobs_in_priority_order_and_records_results(tmp_path):
    seen = []

    def handler(ctx):
        seen.append(ctx.job.kind)
        return JobOutcome("succeeded", result={"kind": ctx.job.kind})

    worker = Worker(_settings(tmp_path), {"train": handler, "generate": handler}, owner="w1")
    train = jobs.enqueue_job(worker.conn, "train", {})
    gen = jobs.enqueue_job(worker.conn, "generate", {})
    assert worker.run(until_idle=True) == 2
    assert seen == ["generate", "train"]
    assert jobs.get_job(worker.conn, train).result == {"kind": "train"}
    assert jobs.get_job(worker.conn, gen).state == "succeeded"


def test_job_error_becomes_the_users_message_and_crashes_stay_private(tmp_path):
    def plain(ctx):
        raise JobError("photo 2 is missing from the store; upload it again.")

    def crash(ctx):
        raise KeyError("/secret/internal/path")

    worker = Worker(_settings(tmp_path), {"train": plain, "generate": crash}, owner="w1")
    a = jobs.enqueue_job(worker.conn, "train", {})
    b = jobs.enqueue_job(worker.conn, "generate", {})
    worker.run(until_idle=True)
    assert jobs.get_job(worker.conn, a).error == "photo 2 is missing from the store; upload it again."
    failed = jobs.get_job(worker.conn, b)
    assert failed.state == "failed" and "/secret" not in failed.error and "worker log" in failed.error


def test_unknown_kind_fails_clearly(tmp_path):
    worker = Worker(_settings(tmp_path), {}, owner="w1")
    job_id = jobs.enqueue_job(worker.conn, "class_images", {})
    worker.run(until_idle=True)
    assert "cannot run class_images" in jobs.get_job(worker.conn, job_id).error


def test_progress_reaches_the_job_row_and_cancel_reaches_the_handler(tmp_path):
    settings = _settings(tmp_path, worker_lease_s=0.3)
    observed = {}

    def slow_training(ctx):
        for step in range(1, 200):
            ctx.lease.report(step=step, total=200, message="training")
            if ctx.stop_reason() == "cancel":
                observed["stopped_at"] = step
                return JobOutcome("cancelled")
            time.sleep(0.02)
        return JobOutcome("succeeded")

    worker = Worker(settings, {"train": slow_training}, owner="w1")
    job_id = jobs.enqueue_job(worker.conn, "train", {})
    runner = threading.Thread(target=worker.run, kwargs={"until_idle": True})
    runner.start()
    watcher = connect(settings.database_path)
    deadline = time.time() + 20
    while jobs.get_job(watcher, job_id).step < 5 and time.time() < deadline:
        time.sleep(0.02)
    assert jobs.get_job(watcher, job_id).message == "training"
    assert jobs.request_cancel(watcher, job_id) == "requested"
    runner.join(timeout=30)
    job = jobs.get_job(watcher, job_id)
    assert job.state == "cancelled"
    assert observed["stopped_at"] < 200


def test_stop_releases_the_job_without_spending_an_attempt(tmp_path):
    def training(ctx):
        ctx.worker.request_stop()  # as SIGTERM would
        assert ctx.stop_reason() == "shutdown"
        return JobOutcome("released", error="paused for restart; will resume from step 3")

    worker = Worker(_settings(tmp_path), {"train": training}, owner="w1")
    job_id = jobs.enqueue_job(worker.conn, "train", {})
    worker.run()
    job = jobs.get_job(worker.conn, job_id)
    assert (job.state, job.attempts, job.message) == ("queued", 0, "paused for restart; will resume from step 3")


def test_waiting_generations_run_between_training_steps(tmp_path):
    order = []

    def generate(ctx):
        order.append(("generate", ctx.job.id))
        return JobOutcome("succeeded")

    def training(ctx):
        for step in range(3):
            order.append(("train-step", step))
            if step == 0:
                jobs.enqueue_job(ctx.conn, "generate", {})
            ctx.worker._last_preempt_check = 0  # no throttling in the test
            ctx.between_steps()
        return JobOutcome("succeeded")

    worker = Worker(_settings(tmp_path), {"train": training, "generate": generate}, owner="w1")
    jobs.enqueue_job(worker.conn, "train", {})
    worker.run(until_idle=True)
    assert order[:3] == [("train-step", 0), ("generate", 2), ("train-step", 1)]


def test_a_job_left_by_a_dead_worker_is_picked_up(tmp_path):
    settings = _settings(tmp_path)
    conn = connect(settings.database_path)
    job_id = jobs.enqueue_job(conn, "train", {})
    jobs.claim_next_job(conn, "dead-worker", -1)  # its lease has already run out
    worker = Worker(settings, {"train": lambda ctx: JobOutcome("succeeded", result={"attempt": ctx.job.attempts})},
                    owner="w2")
    worker.run(until_idle=True)
    assert jobs.get_job(conn, job_id).result == {"attempt": 2}


def test_idle_tasks_run_while_the_queue_is_empty(tmp_path):
    calls = []

    def idle(worker):
        calls.append(worker.owner)
        worker.request_stop()

    worker = Worker(_settings(tmp_path), {}, owner="w1", idle_tasks=[idle])
    worker.run()
    assert calls == ["w1"]


def test_a_failing_idle_task_does_not_stop_the_worker(tmp_path):
    calls = []

    def broken(worker):
        calls.append("broken")
        raise RuntimeError("boom")

    def stop(worker):
        calls.append("stop")
        worker.request_stop()

    worker = Worker(_settings(tmp_path), {}, owner="w1", idle_tasks=[broken, stop])
    worker.run()
    assert calls == ["broken", "stop"]


def test_exclusive_gpu_training_steps_aside_for_waiting_generations(tmp_path):
    """On a GPU too small for both, training checkpoints and is released; the generation runs; training resumes."""
    order = []

    class FakeServer:
        def release_gpu(self):
            order.append("release-serving-pipeline")

    def training(ctx):
        for step in range(ctx.job.payload.get("from", 0), 4):
            if ctx.stop_reason() == "shutdown":
                order.append(("train-paused", step))
                return JobOutcome("released", error="paused")
            order.append(("train-step", step))
            if step == 1 and not ctx.job.payload.get("from"):
                jobs.enqueue_job(ctx.conn, "generate", {})
                ctx.worker._last_preempt_check = 0
            ctx.between_steps()  # exclusive mode: nothing is served inline
        return JobOutcome("succeeded")

    def generate(ctx):
        order.append("generate")
        # the next training attempt resumes where the paused one stopped
        ctx.conn.execute("UPDATE jobs SET payload = ? WHERE kind = 'train'", ('{"from": 2}',))
        return JobOutcome("succeeded")

    settings = _settings(tmp_path, gpu_sharing="exclusive", preempt_min_interval_s=0)
    worker = Worker(settings, {"train": training, "generate": generate}, owner="w1")
    worker.resources["server"] = FakeServer()
    assert worker.exclusive_gpu
    train = jobs.enqueue_job(worker.conn, "train", {})
    worker.run(until_idle=True)
    assert order == ["release-serving-pipeline", ("train-step", 0), ("train-step", 1), ("train-paused", 2),
                     "generate", "release-serving-pipeline", ("train-step", 2), ("train-step", 3)]
    job = jobs.get_job(worker.conn, train)
    assert (job.state, job.attempts) == ("succeeded", 1)  # the pause did not cost an attempt


def test_exclusive_mode_waits_for_the_minimum_training_stretch(tmp_path):
    settings = _settings(tmp_path, gpu_sharing="exclusive", preempt_min_interval_s=3600)
    worker = Worker(settings, {}, owner="w1")
    worker._job_started = time.monotonic()
    jobs.enqueue_job(worker.conn, "generate", {})
    assert not worker.should_yield_gpu()


def test_auto_sharing_on_cpu_is_shared(tmp_path):
    assert not Worker(_settings(tmp_path), {}, owner="w1").exclusive_gpu


def test_the_worker_process_wires_a_handler_for_every_job_kind_and_the_idle_tasks(tmp_path):
    worker = build_worker(_settings(tmp_path), owner="w1")
    try:
        assert set(worker.handlers) == set(jobs.KINDS)
        assert worker.handlers == HANDLERS
        assert worker.idle_tasks == tuple(IDLE_TASKS) != ()
    finally:
        worker.close()
