"""The bot (aiosqlite) and a worker process write at the same time: nobody ever sees 'database is locked'."""

import asyncio
import multiprocessing

import pytest

from storage import generations, jobs, subjects
from storage.db import AsyncDatabase, connect, transaction


def _busy_worker(path: str, seconds: float, out) -> None:
    """What the worker does all day: claim, heartbeat with progress, finish, requeue expired leases."""
    import time

    conn = connect(path)
    deadline, writes = time.monotonic() + seconds, 0
    try:
        while time.monotonic() < deadline:
            job = jobs.claim_next_job(conn, "worker", 30)
            if job is None:
                jobs.enqueue_job(conn, "train", {"filler": True}, user_id=1)
                continue
            for step in range(5):
                jobs.heartbeat(conn, job.id, "worker", 30, step=step, total=5, message="training")
            jobs.finish_job(conn, job.id, "worker", "succeeded", result={"ok": True})
            jobs.requeue_expired(conn)
            writes += 8
        out.put(("ok", writes))
    except Exception as exc:  # reported to the test
        out.put(("error", repr(exc)))


async def _bot_writes(db: AsyncDatabase, count: int) -> int:
    def one_request(conn, i):
        with transaction(conn):
            gen_id = generations.create_generation(
                conn, user_id=1, kind="imagine", prompt=f"picture {i}", negative_prompt="", seed=i, params={},
                adapters=[], subject_ids=[])
            job_id = jobs.enqueue_job(conn, "generate", {"generation_id": gen_id}, user_id=1)
            generations.attach_job(conn, gen_id, job_id)
        jobs.mark_reported(conn, job_id, notified=False, message_id=i)
        return job_id

    for i in range(count):
        await db.run(one_request, i)
        await db.run(jobs.jobs_to_report)
    return count


@pytest.mark.slow
async def test_bot_and_worker_write_together_without_lock_errors(tmp_path):
    path = tmp_path / "likeness.sqlite3"
    setup = connect(path)
    subjects.ensure_user(setup, 1, "ann")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    worker = ctx.Process(target=_busy_worker, args=(str(path), 8.0, out))
    worker.start()
    async with await AsyncDatabase.open(path) as db:
        done = await asyncio.gather(*(_bot_writes(db, 150) for _ in range(3)))
    status, detail = await asyncio.to_thread(out.get, True, 120)
    worker.join(timeout=60)
    assert status == "ok", detail
    assert detail > 100 and sum(done) == 450
    assert setup.execute("SELECT count(*) FROM generations").fetchone()[0] == 450
