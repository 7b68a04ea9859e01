import multiprocessing
import time

import pytest

from storage import jobs
from storage.db import connect, transaction
from storage.subjects import ensure_user


async def test_claims_by_priority_then_age(call):
    train = await call(jobs.enqueue_job, "train", {"n": 1})
    gen1 = await call(jobs.enqueue_job, "generate", {"n": 2})
    gen2 = await call(jobs.enqueue_job, "generate", {"n": 3})
    order = [(await call(jobs.claim_next_job, "w", 30)).id for _ in range(3)]
    assert order == [gen1, gen2, train]
    assert await call(jobs.claim_next_job, "w", 30) is None


async def test_claim_sets_owner_lease_and_attempts(call):
    job_id = await call(jobs.enqueue_job, "train", {"subject_ids": [1]}, user_id=None)
    before = time.time()
    job = await call(jobs.claim_next_job, "worker-1", 30)
    assert (job.id, job.state, job.owner, job.attempts) == (job_id, "running", "worker-1", 1)
    assert job.lease_until >= before + 30
    assert job.payload == {"subject_ids": [1]}


async def test_claim_can_be_limited_to_kinds(call):
    await call(jobs.enqueue_job, "train", {})
    assert await call(jobs.claim_next_job, "w", 30, ("generate",)) is None
    assert (await call(jobs.claim_next_job, "w", 30, ("train",))).kind == "train"


async def test_only_the_owner_can_heartbeat_and_finish(call):
    job_id = await call(jobs.enqueue_job, "train", {})
    await call(jobs.claim_next_job, "owner", 30)
    assert not (await call(jobs.heartbeat, job_id, "intruder", 30, step=5)).alive
    assert not await call(jobs.finish_job, job_id, "intruder", "succeeded")
    beat = await call(jobs.heartbeat, job_id, "owner", 30, step=5, total=10, message="training", eta_at=123.0)
    assert beat.alive and not beat.cancel_requested
    job = await call(jobs.get_job, job_id)
    assert (job.step, job.total, job.message, job.eta_at) == (5, 10, "training", 123.0)
    assert await call(jobs.finish_job, job_id, "owner", "succeeded", result={"adapter_id": 4})
    job = await call(jobs.get_job, job_id)
    assert (job.state, job.result, job.owner) == ("succeeded", {"adapter_id": 4}, "owner")
    assert not await call(jobs.finish_job, job_id, "owner", "failed")  # already finished


async def test_finish_rejects_non_final_states(call):
    job_id = await call(jobs.enqueue_job, "train", {})
    await call(jobs.claim_next_job, "w", 30)
    with pytest.raises(ValueError):
        await call(jobs.finish_job, job_id, "w", "running")


async def test_expired_lease_is_requeued_and_old_owner_is_locked_out(call):
    job_id = await call(jobs.enqueue_job, "train", {})
    await call(jobs.claim_next_job, "dead-worker", -1)  # lease already expired
    requeued, failed = await call(jobs.requeue_expired)
    assert (requeued, failed) == ([job_id], [])
    job = await call(jobs.get_job, job_id)
    assert (job.state, job.owner) == ("queued", None)
    again = await call(jobs.claim_next_job, "new-worker", 30)
    assert (again.id, again.attempts) == (job_id, 2)
    assert not (await call(jobs.heartbeat, job_id, "dead-worker", 30)).alive
    assert not await call(jobs.finish_job, job_id, "dead-worker", "succeeded")


async def test_live_lease_is_not_requeued(call):
    await call(jobs.enqueue_job, "train", {})
    await call(jobs.claim_next_job, "w", 60)
    assert await call(jobs.requeue_expired) == ([], [])


async def test_job_fails_with_a_reason_after_max_attempts(call):
    job_id = await call(jobs.enqueue_job, "train", {}, max_attempts=2)
    for _ in range(2):
        await call(jobs.claim_next_job, "w", -1)
        await call(jobs.requeue_expired)
    job = await call(jobs.get_job, job_id)
    assert job.state == "failed"
    assert "stopped 2 times" in job.error


async def test_release_returns_job_without_spending_an_attempt(call):
    job_id = await call(jobs.enqueue_job, "train", {})
    await call(jobs.claim_next_job, "w", 30)
    assert await call(jobs.release_job, job_id, "w", "paused for shutdown")
    job = await call(jobs.get_job, job_id)
    assert (job.state, job.attempts, job.message) == ("queued", 0, "paused for shutdown")


async def test_requeue_owner_returns_a_dead_workers_jobs_at_once(call):
    a = await call(jobs.enqueue_job, "train", {})
    b = await call(jobs.enqueue_job, "train", {})
    await call(jobs.claim_next_job, "dead", 600)
    await call(jobs.claim_next_job, "alive", 600)
    assert await call(jobs.requeue_owner, "dead") == ([a], [])
    assert (await call(jobs.get_job, b)).state == "running"


async def test_cancel_queued_running_and_finished(call):
    queued = await call(jobs.enqueue_job, "generate", {})
    running = await call(jobs.enqueue_job, "train", {})
    await call(jobs.claim_next_job, "w", 30, ("train",))
    assert await call(jobs.request_cancel, queued) == "cancelled"
    assert (await call(jobs.get_job, queued)).state == "cancelled"
    assert await call(jobs.request_cancel, running) == "requested"
    assert (await call(jobs.heartbeat, running, "w", 30)).cancel_requested
    await call(jobs.finish_job, running, "w", "cancelled")
    assert await call(jobs.request_cancel, running) == "finished"
    assert await call(jobs.request_cancel, 999) == "not_found"


async def test_queue_position(call):
    t1 = await call(jobs.enqueue_job, "train", {})
    t2 = await call(jobs.enqueue_job, "train", {})
    g1 = await call(jobs.enqueue_job, "generate", {})
    assert [await call(jobs.queue_position, j) for j in (g1, t1, t2)] == [1, 2, 3]
    await call(jobs.claim_next_job, "w", 30)
    assert await call(jobs.queue_position, g1) == 0
    assert await call(jobs.queue_position, t1) == 1
    await call(jobs.finish_job, g1, "w", "succeeded")
    assert await call(jobs.queue_position, g1) is None


async def test_jobs_to_report_tracks_changes_until_notified(call):
    job_id = await call(jobs.enqueue_job, "train", {}, channel_id=42)
    assert [j.id for j in await call(jobs.jobs_to_report)] == [job_id]
    await call(jobs.mark_reported, job_id, notified=False, message_id=7)
    assert await call(jobs.jobs_to_report) == []
    await call(jobs.claim_next_job, "w", 30)
    await call(jobs.heartbeat, job_id, "w", 30, step=1)
    assert [j.id for j in await call(jobs.jobs_to_report)] == [job_id]
    await call(jobs.finish_job, job_id, "w", "succeeded")
    await call(jobs.mark_reported, job_id, notified=True)
    assert await call(jobs.jobs_to_report) == []
    assert (await call(jobs.get_job, job_id)).message_id == 7


def _drain_queue(path: str, owner: str, out, start) -> None:
    conn = connect(path)
    claimed = []
    start.wait(timeout=120)  # both processes start claiming together
    while (job := jobs.claim_next_job(conn, owner, 60)) is not None:
        claimed.append(job.id)
        conn.execute("INSERT INTO work_done (job_id, owner) VALUES (?, ?)", (job.id, owner))
        assert jobs.finish_job(conn, job.id, owner, "succeeded")
    out.put(claimed)


@pytest.mark.slow
def test_two_processes_never_claim_the_same_job(tmp_path):
    path = str(tmp_path / "queue.sqlite3")
    conn = connect(path)
    conn.execute("CREATE TABLE work_done (job_id INTEGER, owner TEXT)")
    ids = [jobs.enqueue_job(conn, "generate", {"i": i}) for i in range(1000)]
    ctx = multiprocessing.get_context("spawn")
    out, start = ctx.Queue(), ctx.Barrier(2)
    workers = [ctx.Process(target=_drain_queue, args=(path, f"worker-{n}", out, start)) for n in range(2)]
    for worker in workers:
        worker.start()
    claimed = [out.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    everything = claimed[0] + claimed[1]
    assert sorted(everything) == ids  # each job claimed exactly once
    assert all(claimed), "both processes should have taken part"
    assert {row[0] for row in conn.execute("SELECT state FROM jobs")} == {"succeeded"}
    done = conn.execute("SELECT job_id, count(*) FROM work_done GROUP BY job_id").fetchall()
    assert len(done) == 1000 and all(count == 1 for _, count in done)  # each job's work done exactly once


def test_stop_jobs_touches_only_the_selected_jobs(conn):
    for user_id in (1, 2):
        ensure_user(conn, user_id, f"user{user_id}")
    running = jobs.enqueue_job(conn, "train", {}, user_id=1)
    assert jobs.claim_next_job(conn, "w", 30).id == running
    queued = jobs.enqueue_job(conn, "generate", {}, user_id=1)
    others = jobs.enqueue_job(conn, "generate", {}, user_id=2)
    with transaction(conn):
        jobs.stop_jobs(conn, jobs.JobsOfUser(1), message="deleted on request", stamp=1.0)
    assert jobs.get_job(conn, queued).state == "cancelled"
    assert jobs.get_job(conn, running).cancel_requested and jobs.get_job(conn, running).state == "running"
    assert jobs.get_job(conn, others).state == "queued"
    with transaction(conn):
        jobs.stop_jobs(conn, jobs.OneJob(others), message="cancelled", stamp=2.0)
    assert jobs.get_job(conn, others).state == "cancelled"
    with pytest.raises(TypeError):
        jobs.stop_jobs(conn, "user_id = 2", message="x", stamp=3.0)  # SQL text is not a selector
