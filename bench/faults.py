"""Faults that used to lose work or hang (issue 18), each provoked for real on the tiny model.

    python -m bench.faults --json [--quick]

Scenarios:
- damaged databases (0 bytes next to a full store, truncated, garbage header, garbage pages, garbage in the WAL):
  `python -m bot` must refuse with one line and a non-zero exit, never hang or show a traceback; then
  `python -m bot restore` and a clean start. recovery_s: from the damaged start to the first healthy one.
- kill -9 of the console while its worker runs: the worker must follow. recovery_s: kill to worker gone.
- kill -9 of the worker mid-training under the supervisor: the job goes straight back to the queue and a new
  worker resumes it. recovery_s: kill to the job running again under the new worker.
- a full disk (a tmpfs mounted here; skipped with the reason where mounting is impossible): a training job that
  cannot fit is refused before it starts, and a disk that fills mid-training fails the job with the disk-full
  sentence, never leaving it running. recovery_s: fill to the job's outcome recorded.
- forget: markers of a forgotten user (name, trigger, captions, prompt, file hashes) searched in the raw database,
  WAL, store and backups while the process still runs.
- unshare mid-render: render steps drawn after the owner unshared (the render must stop before the next step).

Printed: stuck_jobs, orphan_workers, hangs, tracebacks_shown, forgotten_bytes_found (all should be 0),
undetected_damage, render_steps_after_unshare, recovery_s per crash kind, and details per scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import fault_world as fw
from storage import consent, generations, jobs
from storage.db import AsyncDatabase, connect
from storage.files import FileStore
from storage.forget import sweep_forgotten, tombstone_user
from storage.locks import is_held
from storage.subjects import ensure_user

DAMAGE_KINDS = ("zero_byte", "truncated", "garbage_header", "garbage_pages", "garbage_wal")


class Tally:
    def __init__(self) -> None:
        self.figures = {"stuck_jobs": 0, "orphan_workers": 0, "hangs": 0, "tracebacks_shown": 0,
                        "forgotten_bytes_found": 0, "undetected_damage": 0, "render_steps_after_unshare": 0}
        self.recovery_s: dict[str, float | None] = {}
        self.details: dict[str, object] = {}

    def count_run(self, run: fw.Run) -> None:
        self.figures["hangs"] += int(run.hung)
        self.figures["tracebacks_shown"] += run.tracebacks


def damaged_databases(root: Path, tally: Tally) -> None:
    for kind in DAMAGE_KINDS:
        data = root / kind / "data"
        data.mkdir(parents=True)
        fw.make_damaged(data, kind)
        began = time.monotonic()
        refused = fw.run_bot(data, "console", "--worker", "none")
        restored = fw.run_bot(data, "restore", stdin="")
        healthy = fw.run_bot(data, "console", "--worker", "none")
        for run in (refused, restored, healthy):
            tally.count_run(run)
        detected = refused.code not in (0, None)
        tally.figures["undetected_damage"] += int(not detected)
        ok = restored.code == 0 and healthy.code == 0
        tally.recovery_s[f"damaged_db_{kind}"] = round(time.monotonic() - began, 2) if ok else None
        lines = refused.out.strip().splitlines()
        tally.details[f"damaged_db_{kind}"] = {"refusal": lines[-1:], "lines_printed": len(lines), "restored": ok}


def console_killed(root: Path, tally: Tally) -> None:
    data = root / "kill-console" / "data"
    data.mkdir(parents=True)
    parent = subprocess.Popen([sys.executable, "-m", "bot", "console", "--worker", "subprocess"],
                              cwd=data.parent, env=fw.clean_env(data), stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = fw.wait_for(lambda: next(iter(fw.children_of(parent.pid)), None), fw.START_TIMEOUT_S)
    started = worker is not None and fw.wait_for(lambda: is_held(data / "worker.lock"), fw.START_TIMEOUT_S)
    killed_at = time.monotonic()
    parent.kill()
    parent.wait()
    gone = bool(started) and fw.wait_for(lambda: not fw.alive(worker), 60) is not None
    tally.recovery_s["console_kill9"] = round(time.monotonic() - killed_at, 2) if gone else None
    if worker is not None and fw.alive(worker):
        tally.figures["orphan_workers"] += 1
        os.kill(worker, signal.SIGKILL)
    tally.details["console_kill9"] = {"worker_started": bool(started), "worker_gone": gone}


async def _worker_killed(root: Path, shared: Path, tally: Tally) -> None:
    from bot.supervisor import WorkerSupervisor

    settings = fw.settings_for(root / "kill-worker" / "data", shared, worker_lease_s=30.0)
    conn = connect(settings.database_path)
    store = FileStore(settings.store_dir)
    job_id = fw.queue_training(conn, fw.add_subject(conn, store, 1, "rraj").id, 1, steps=400, checkpoint_every=5)
    db = await AsyncDatabase.open(settings.database_path)
    supervisor = WorkerSupervisor(settings, db, min_backoff_s=0.2, stop_timeout_s=120)
    supervisor.start()

    async def until(predicate, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await predicate():
                return True
            await asyncio.sleep(0.1)
        return False

    async def training():
        job = await db.run(jobs.get_job, job_id)
        return job.state == "running" and job.step >= 6

    try:
        recovered = False
        if await until(training, 600):
            first = supervisor.state.owner
            os.kill(supervisor.state.pid, signal.SIGKILL)
            killed_at = time.monotonic()

            async def resumed():
                job = await db.run(jobs.get_job, job_id)
                return job.state == "running" and job.owner not in (None, first)

            recovered = await until(resumed, 600)
            tally.recovery_s["worker_kill9"] = round(time.monotonic() - killed_at, 2) if recovered else None
        tally.details["worker_kill9"] = {"resumed_by_a_new_worker": recovered}
    finally:
        await supervisor.stop()
        await db.close()
        conn.close()
    tally.figures["stuck_jobs"] += fw.stuck_jobs(settings.database_path)


def _fill_once_training(settings, job_id: int) -> dict[str, float]:
    """Start a thread that fills the disk as soon as the job reports a training step; returns when it did."""
    filled: dict[str, float] = {}

    def watch() -> None:
        conn = connect(settings.database_path, apply_migrations=False)
        try:
            if fw.wait_for(lambda: jobs.get_job(conn, job_id).step >= 1, 600):
                fw.fill(settings.data_dir)  # someone else fills the disk mid-training
                filled["at"] = time.monotonic()
        finally:
            conn.close()

    threading.Thread(target=watch, name="filler", daemon=True).start()
    return filled


def disk_full(root: Path, shared: Path, tally: Tally) -> None:
    from trainer.__main__ import build_worker

    for name, size in (("disk_refused_early", 3 * 1024 * 1024), ("disk_full_mid_training", 24 * 1024 * 1024)):
        point = root / name
        why_not = fw.mount_small_disk(point, size)
        if why_not is not None:
            tally.details[name] = {"skipped": why_not}
            continue
        try:
            settings = fw.settings_for(point / "data", shared, worker_lease_s=0.6)  # progress every 0.2 s
            conn = connect(settings.database_path)
            store = FileStore(settings.store_dir)
            job_id = fw.queue_training(conn, fw.add_subject(conn, store, 1, "rraj").id, 1, steps=400,
                                       checkpoint_every=4)
            worker = build_worker(settings, owner="bench")
            filled = _fill_once_training(settings, job_id) if name == "disk_full_mid_training" else {}
            began = time.monotonic()
            try:
                worker.run(until_idle=True)
            finally:
                worker.close()
            job = jobs.get_job(conn, job_id)
            clean = job.state == "failed" and "disk is" in (job.error or "")
            since = filled.get("at", began)
            tally.recovery_s[name] = round(time.monotonic() - since, 2) if clean else None
            tally.figures["stuck_jobs"] += int(job.state == "running")
            tally.details[name] = {"state": job.state, "error": job.error, "disk_filled": bool(filled)}
            conn.close()
        finally:
            fw.unmount(point)


MARKERS = ("Zanzibarina Quoxley", "qqzxv", "caption-marker-7781", "prompt-marker-5521")


def forget_erasure(root: Path, tally: Tally) -> None:
    from storage.backups import backup_database

    data = root / "forget" / "data"
    data.mkdir(parents=True)
    conn = connect(data / "likeness.sqlite3")
    other = connect(data / "likeness.sqlite3")  # another process's connection, left open
    store = FileStore(data / "store")
    subject = fw.add_subject(conn, store, 7, "qqzxv", name="Zanzibarina Quoxley", caption="caption-marker-7781")
    generations.create_generation(conn, user_id=7, kind="imagine", prompt="qqzxv person prompt-marker-5521",
                                  negative_prompt="", seed=1, params={}, adapters=[], subject_ids=[subject.id])
    hashes = [row[0] for row in conn.execute("SELECT sha256 FROM photos")]
    backup_database(conn, data / "backups", keep=3)
    for n in range(20):
        ensure_user(conn, 100 + n, f"someone else {n}")
    tombstone_user(conn, 7)
    sweep_forgotten(conn, store)
    markers = [m.encode() for m in (*MARKERS, *hashes)] + [bytes.fromhex(h) for h in hashes]
    found = [(path.name, marker) for path in data.rglob("*") if path.is_file()
             for marker in markers if marker in path.read_bytes()]
    tally.figures["forgotten_bytes_found"] += len(found)
    tally.details["forget"] = {"markers": len(markers), "found": [f"{name}: {m[:20]!r}" for name, m in found]}
    other.close()
    conn.close()


def unshare_mid_render(root: Path, shared: Path, tally: Tally) -> None:
    from trainer.__main__ import build_worker
    from trainer.serving import kinds

    settings = fw.settings_for(root / "unshare" / "data", shared, worker_lease_s=30.0)
    conn = connect(settings.database_path)
    store = FileStore(settings.store_dir)
    subject = fw.add_subject(conn, store, 1, "rraj")
    train = fw.queue_training(conn, subject.id, 1, steps=4)
    worker = build_worker(settings, owner="bench")
    worker.run(until_idle=True)
    adapter_id = (jobs.get_job(conn, train).result or {}).get("adapter_id")
    ensure_user(conn, 2, "friend")
    consent.grant_access(conn, subject.id, user_id=2)
    entries = [{"kind": "subject", "subject_id": subject.id, "adapter_id": adapter_id, "trigger": "rraj",
                "weight": 1.0}]
    params = {"width": 64, "height": 64, "steps": 8, "guidance": 5.0, "scheduler": "euler", "count": 3,
              "aspect": "square"}
    gen = generations.create_generation(conn, user_id=2, kind="imagine", prompt="rraj person", negative_prompt="",
                                        seed=1, params=params, adapters=entries, subject_ids=[subject.id])
    job_id = jobs.enqueue_job(conn, "generate", {"generation_id": gen}, user_id=2)
    steps: list[int] = []
    original = kinds.RenderProgress.on_step

    def on_step(self, pipe, step):  # instrumentation only: count the steps, unshare at the first
        steps.append(step)
        if len(steps) == 1:
            consent.revoke_access(conn, subject.id, user_id=2)
        original(self, pipe, step)

    kinds.RenderProgress.on_step = on_step
    try:
        worker.run(until_idle=True)
    finally:
        kinds.RenderProgress.on_step = original
        worker.close()
    job = jobs.get_job(conn, job_id)
    tally.figures["render_steps_after_unshare"] += max(0, len(steps) - 1)
    tally.details["unshare_mid_render"] = {"state": job.state, "error": job.error, "steps_drawn": len(steps),
                                           "steps_requested": 8 * 3}
    conn.close()


def run_all(quick: bool) -> dict:
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="likeness-faults-") as tmp:
        root, shared = Path(tmp), Path(tmp) / "shared"
        damaged_databases(root, tally)
        console_killed(root, tally)
        forget_erasure(root, tally)
        disk_full(root, shared, tally)
        unshare_mid_render(root, shared, tally)
        if not quick:
            asyncio.run(_worker_killed(root, shared, tally))
    return {**tally.figures, "recovery_s": tally.recovery_s, "details": tally.details}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="leave out the kill -9 of a training worker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    figures = run_all(args.quick)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    zero = ("stuck_jobs", "orphan_workers", "hangs", "tracebacks_shown", "forgotten_bytes_found",
            "undetected_damage", "render_steps_after_unshare")
    return 0 if all(figures[key] == 0 for key in zero) else 1


if __name__ == "__main__":
    sys.exit(main())
