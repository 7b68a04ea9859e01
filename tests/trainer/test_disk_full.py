"""A full disk, for real: a small tmpfs mounted for the test holds the data directory (models and caches stay
outside). Training is refused early with the figures, a disk that fills mid-training fails the job plainly and
never leaves it running, and a start-up, a restore or a backup on a full disk ends in one line that says the disk
is full (never that the database is damaged), with no traceback, no hang and no partial file. Where mounting is
refused the tests skip, except under CI (set `CI`), which runs as root: there it is a failure."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from storage import files, jobs, photos, subjects
from storage.disk import free_bytes
from tests.trainer.job_fixtures import make_world
from trainer import worker as worker_module
from trainer.handlers import HANDLERS
from trainer.worker import Worker

REPO = Path(__file__).resolve().parents[2]
FAST = {"steps": 12, "num_class_images": 2, "checkpoint_every": 4, "preview_every": 0}


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a tmpfs of that many bytes, unmounted afterwards (needs root or CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            why = f"cannot mount a small tmpfs here ({done.stderr.strip()})"
            if os.environ.get("CI"):  # CI runs as root: a refused mount is our failure, never a skip
                pytest.fail(why)
            pytest.skip(why)
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(folder: Path, leave: int = 0) -> None:
    """Write a filler file until only `leave` bytes are free (or the disk refuses)."""
    with suppress(OSError), open(folder / "filler", "wb") as fh:
        while free_bytes(folder) > leave:
            fh.write(b"\0" * min(64 * 1024, max(4096, free_bytes(folder) - leave)))
            fh.flush()


def _world_on(disk: Path, tmp_path: Path, **settings):
    data = disk / "data"
    data.mkdir()
    for name in ("models", "cache"):  # the tiny models and class images live off the small disk
        (tmp_path / name).mkdir(exist_ok=True)
        (data / name).symlink_to(tmp_path / name, target_is_directory=True)
    return make_world(data, **settings)


def add_subject(world, user_id: int, trigger: str):
    """A subject with two stored photos as the intake leaves them (64 px crops of noise: no face detector)."""
    subjects.ensure_user(world.conn, user_id, f"user{user_id}")
    subject = subjects.create_subject(world.conn, owner_id=user_id, trigger=trigger, trigger_key=trigger,
                                      class_noun="person", display_name=trigger, family="tiny-sd15")
    rng = np.random.default_rng(user_id)
    for n in range(2):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
        png = buffer.getvalue()
        sha = hashlib.sha256(png).hexdigest()
        crop = world.store.write_bytes(files.photo_crop_key(user_id, subject.id, sha), png)
        original = world.store.write_bytes(files.photo_original_key(user_id, subject.id, sha, "png"), png)
        photos.add_accepted_photo(world.conn, subject.id, original_name=f"p{n}.png", sha256=sha, phash=f"{n:016x}",
                                  original_path=original, crop_path=crop, size_bytes=len(png), width=64, height=64,
                                  face_box=(0, 0, 64, 64), caption=f"a photo of {trigger} person")
    return subject


def _train(world, subject_id: int) -> int:
    payload = {"subject_ids": [subject_id], "family": "tiny-sd15", "base_model": "tiny-sd15", "overrides": FAST}
    return jobs.enqueue_job(world.conn, "train", payload, user_id=1)


def test_training_that_cannot_fit_is_refused_before_it_starts_with_the_figures(small_disk, tmp_path, caplog):
    world = _world_on(small_disk(3 * 1024 * 1024), tmp_path)
    job_id = _train(world, add_subject(world, 1, "rraj").id)
    with caplog.at_level(logging.ERROR):
        Worker(world.settings, HANDLERS, owner="w").run(until_idle=True)
    job = jobs.get_job(world.conn, job_id)
    assert job.state == "failed" and job.attempts == 1
    assert "too full for this training job" in job.error and "MiB is free" in job.error
    assert "free on" in caplog.text


@pytest.mark.slow
def test_a_disk_that_fills_mid_training_fails_the_job_plainly_and_never_leaves_it_running(
        small_disk, tmp_path, monkeypatch, caplog):
    world = _world_on(small_disk(24 * 1024 * 1024), tmp_path, worker_lease_s=30.0)
    job_id = _train(world, add_subject(world, 1, "rraj").id)
    monkeypatch.setattr(worker_module, "check_space_for", lambda settings, job: None)  # the early check missed it
    worker = Worker(world.settings, HANDLERS, owner="w")
    worker.reserve.ensure()
    assert worker.reserve.path.exists()
    fill(world.settings.data_dir, leave=64 * 1024)  # someone else filled the disk
    with caplog.at_level(logging.ERROR):
        worker.run(until_idle=True)
    job = jobs.get_job(world.conn, job_id)
    assert job.state == "failed" and "disk is full" in job.error
    assert "Traceback" not in job.error and "basic_ios" not in job.error
    assert "free on" in caplog.text
    assert jobs.active_jobs(world.conn) == []


def test_starting_on_a_full_disk_ends_in_one_line_and_no_hang(small_disk, tmp_path):
    disk = small_disk(1024 * 1024)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(LIKENESS_DATA_DIR=str(disk / "data"), LIKENESS_BACKUP_INTERVAL_H="0")
    fill(disk, leave=20 * 1024)
    done = subprocess.run([sys.executable, "-m", "bot", "console", "--worker", "none"], input="whoami\n",
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("likeness:")]
    assert len(lines) == 1 and "disk is full" in lines[0] and "free on" in lines[0]


def _run_bot(data: Path, cwd: Path, *args: str, stdin: str = "whoami\n") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(LIKENESS_DATA_DIR=str(data), LIKENESS_BACKUP_INTERVAL_H="0")
    return subprocess.run([sys.executable, "-m", "bot", *args], input=stdin, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _healthy_data_dir(disk: Path) -> Path:
    from storage.backups import backup_database
    from storage.db import connect

    data = disk / "data"
    conn = connect(data / "likeness.sqlite3")
    for n in range(50):
        subjects.ensure_user(conn, n + 1, f"user {n}")
    backup_database(conn, data / "backups", keep=3)
    conn.close()
    return data


def _leftovers(data: Path) -> list[str]:
    return [p.name for p in data.rglob("*") if p.is_file() and any(m in p.name for m in (".tmp-", ".restore-"))]


def test_a_healthy_database_on_a_full_disk_is_called_full_not_damaged(small_disk, tmp_path):
    disk = small_disk(4 * 1024 * 1024)
    data = _healthy_data_dir(disk)
    fill(disk, leave=20 * 1024)
    done = _run_bot(data, tmp_path, "console", "--worker", "none")
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("likeness:")]
    assert len(lines) == 1 and "disk is full" in lines[0] and "free on" in lines[0] and "damaged" not in lines[0]
    (disk / "filler").unlink()
    assert _run_bot(data, tmp_path, "console", "--worker", "none").returncode == 0  # it was never damaged


def test_restore_and_backup_on_a_full_disk_say_so_and_leave_no_partial_file(small_disk, tmp_path, monkeypatch):
    from storage import restore as restore_module
    from storage.backup_commands import run_command

    disk = small_disk(4 * 1024 * 1024)
    data = _healthy_data_dir(disk)
    fill(disk, leave=20 * 1024)
    db, store = data / "likeness.sqlite3", data / "store"
    for mode in ("restore", "backup"):
        code, line = run_command(mode, db, store, keep=3)
        assert code == 1 and "disk is full" in line and "free on" in line and " is damaged" not in line, line
    monkeypatch.setattr(restore_module, "RESTORE_MARGIN_BYTES", -10**9)  # let the copy start, and fail midway
    code, line = run_command("restore", db, store, keep=3)
    assert code == 1 and "disk is full" in line and "nothing was changed" in line, line
    assert _leftovers(data) == [] and not list(data.glob("damaged-*"))
    assert db.exists() and len(list((data / "backups").iterdir())) == 1
