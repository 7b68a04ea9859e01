"""bench.faults scenarios on a really full disk: a small tmpfs mounted for each, the data directory on it.

- disk_refused_early / disk_full_mid_training: a training job that cannot fit is refused before it starts; a disk
  that fills mid-training fails the job with the disk-full sentence and never leaves it running.
- full_disk_at_start: 20 KiB free. Start-up, restore and backup must each say "the disk is full" with the free
  space (never "damaged"), show no traceback and leave no partial file; once space is freed, Likeness starts
  with every row it had.
- export_full_disk: `export` in the console when the zip fits in the store but not in `--out`: one error line with
  the free space, no partial zip anywhere; with space freed the export works.
A refused mount, or a disk that never filled, leaves the scenario not exercised.
"""

from __future__ import annotations

import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from bench import fault_world as fw
from storage import adapters, jobs
from storage.backups import backup_database
from storage.db import connect
from storage.disk import free_bytes
from storage.files import FileStore, adapter_root

FULL_LEFT_BYTES = 20 * 1024
ADAPTER_BYTES = 1536 * 1024


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


def disk_full_training(root: Path, shared: Path, tally: fw.Tally) -> None:
    for name, size in (("disk_refused_early", 3 * 1024 * 1024), ("disk_full_mid_training", 24 * 1024 * 1024)):
        point = root / name
        why_not = fw.mount_small_disk(point, size)
        if why_not is not None:
            tally.missed(name, f"the tmpfs mount was refused: {why_not}")
            continue
        try:
            _train_on_small_disk(name, point, shared, tally)
        finally:
            fw.unmount(point)


def _train_on_small_disk(name: str, point: Path, shared: Path, tally: fw.Tally) -> None:
    from trainer.__main__ import build_worker

    settings = fw.settings_for(point / "data", shared, worker_lease_s=0.6)  # progress every 0.2 s
    conn = connect(settings.database_path)
    store = FileStore(settings.store_dir)
    job_id = fw.queue_training(conn, fw.add_subject(conn, store, 1, "rraj").id, 1, steps=400, checkpoint_every=4)
    worker = build_worker(settings, owner="bench")
    filled = _fill_once_training(settings, job_id) if name == "disk_full_mid_training" else {}
    began = time.monotonic()
    try:
        worker.run(until_idle=True)
    finally:
        worker.close()
    job = jobs.get_job(conn, job_id)
    clean = job.state == "failed" and "disk is" in (job.error or "")
    tally.recovery_s[name] = round(time.monotonic() - filled.get("at", began), 2) if clean else None
    tally.figures["stuck_jobs"] += int(job.state == "running")
    tally.details[name] = {"state": job.state, "error": job.error, "disk_filled": bool(filled)}
    if name == "disk_refused_early":
        tally.check(name, "too full" in (job.error or ""), f"the early check never refused ({job.state})")
    else:
        tally.check(name, filled, "the disk never filled during training")
    conn.close()


def _lines(run: fw.Run) -> list[str]:
    return [line for line in run.out.splitlines() if line.strip()]


def _says_full(run: fw.Run) -> bool:
    """Exit 1 with the disk-full sentence and the free space, never calling the database damaged."""
    text = run.out.lower()
    return run.code == 1 and "disk is full" in text and " free" in text and "damaged" not in text.replace(
        "not damaged", "")


def full_disk_at_start(root: Path, shared: Path, tally: fw.Tally) -> None:
    name, point = "full_disk_at_start", root / "full-at-start"
    why_not = fw.mount_small_disk(point, 8 * 1024 * 1024)
    if why_not is not None:
        tally.missed(name, f"the tmpfs mount was refused: {why_not}")
        return
    try:
        data = point / "data"
        data.mkdir()
        conn = connect(data / "likeness.sqlite3")
        fw.add_subject(conn, FileStore(data / "store"), 1, "rraj")
        backup_database(conn, data / "backups", keep=3)
        conn.close()
        before = fw.confirmed_rows(data / "likeness.sqlite3")
        fw.fill(data, leave=FULL_LEFT_BYTES)
        left = free_bytes(data)
        full = left <= 2 * FULL_LEFT_BYTES
        runs = {"start": fw.run_bot(data, "console", "--worker", "none"), "restore": fw.run_bot(data, "restore"),
                "backup": fw.run_bot(data, "backup")}
        partial = fw.partial_files(data)
        (data / "filler").unlink()
        healthy = fw.run_bot(data, "console", "--worker", "none")
        for run in (*runs.values(), healthy):
            tally.count_run(run)
        lost = len(before - fw.confirmed_rows(data / "likeness.sqlite3")) if healthy.code == 0 else len(before)
        tally.add("confirmed_writes_lost", lost)
        tally.add("partial_files_left", len(partial))
        said_full = {what: _says_full(run) for what, run in runs.items()}
        tally.details[name] = {"free_bytes_at_start": left, "said_disk_full": said_full,
                               "lines": {what: _lines(run)[-1:] for what, run in runs.items()},
                               "partial_files": partial, "started_after_freeing_space": healthy.code == 0}
        tally.add("full_disks_misread", sum(not ok for ok in said_full.values()))
        tally.check(name, full and runs["start"].code is not None, "the disk never filled")
    finally:
        fw.unmount(point)


def _data_with_adapter(data: Path) -> None:
    conn = connect(data / "likeness.sqlite3")
    store = FileStore(data / "store")
    subject = fw.add_subject(conn, store, 1, "rraj")  # user 1 is the console's own user
    job_id = fw.queue_training(conn, subject.id, 1)
    weights = np.random.default_rng(1).integers(0, 255, ADAPTER_BYTES, dtype=np.uint8).tobytes()  # incompressible
    key = store.write_bytes(adapter_root(1, job_id) + "/pytorch_lora_weights.safetensors", weights)
    adapters.record_adapter(conn, owner_id=1, job_id=job_id, family="tiny-sd15", base_model="tiny-sd15", path=key,
                            sha256=store.sha256(key), size_bytes=len(weights), params={}, subject_ids=[subject.id])
    conn.close()


def export_full_disk(root: Path, shared: Path, tally: fw.Tally) -> None:
    name, point = "export_full_disk", root / "export-full"
    why_not = fw.mount_small_disk(point, 16 * 1024 * 1024)
    if why_not is not None:
        tally.missed(name, f"the tmpfs mount was refused: {why_not}")
        return
    try:
        data, out = point / "data", point / "out"
        data.mkdir()
        _data_with_adapter(data)
        fw.fill(data, leave=ADAPTER_BYTES + ADAPTER_BYTES // 2)  # the zip fits in the store, not twice
        full = fw.run_bot(data, "console", "--worker", "none", "--out", str(out), stdin="export rraj\n")
        partial = fw.partial_files(data, out)
        (data / "filler").unlink()
        again = fw.run_bot(data, "console", "--worker", "none", "--out", str(out), stdin="export rraj\n")
        for run in (full, again):
            tally.count_run(run)
        errors = [line for line in full.out.splitlines() if line.startswith("error:")]
        said_full = any("disk is full" in line and " free on " in line for line in errors)
        zips = sorted(out.glob("*.zip")) if out.exists() else []
        good = [z.name for z in zips if zipfile.is_zipfile(z) and zipfile.ZipFile(z).testzip() is None]
        tally.add("partial_files_left", len(partial))
        tally.details[name] = {"error": errors[-1:], "partial_files": partial, "zips_after_freeing_space": good}
        tally.add("full_disks_misread", int(bool(errors) and not said_full))
        tally.check(name, errors, "the disk never filled during the export")
        if not good:
            tally.add("confirmed_writes_lost", 1)  # the export that should then work did not
    finally:
        fw.unmount(point)
