"""Helpers for bench.faults: data directories, subprocess runs of the real entry points, and damage to a database."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from storage import files, jobs, photos, subjects
from storage.db import connect
from storage.disk import free_bytes
from storage.settings import Settings

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0


@dataclass
class Run:
    code: int | None  # None: it hung and was killed at the timeout
    out: str
    seconds: float

    @property
    def hung(self) -> bool:
        return self.code is None

    @property
    def tracebacks(self) -> int:
        return self.out.count("Traceback (most recent call last)")


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(LIKENESS_DATA_DIR=str(data_dir), LIKENESS_MODEL_FAMILY="tiny-sd15", LIKENESS_WORKER_NICE="0",
               LIKENESS_BACKUP_INTERVAL_H="0", **extra)
    return env


def run_bot(data_dir: Path, *args: str, stdin: str = "whoami\n", timeout_s: float = START_TIMEOUT_S) -> Run:
    """`python -m bot ARGS` as a host runs it; a run past the timeout counts as a hang."""
    began = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "bot", *args], input=stdin, cwd=data_dir.parent,
                              env=clean_env(data_dir), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as expired:
        return Run(None, f"{expired.stdout or ''}{expired.stderr or ''}", time.monotonic() - began)
    return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - began)


def settings_for(data_dir: Path, shared: Path, **values) -> Settings:
    """Settings on data_dir whose tiny models and class images are shared (built once per bench run)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("models", "cache"):
        (shared / name).mkdir(parents=True, exist_ok=True)
        link = data_dir / name
        if not link.exists():
            link.symlink_to(shared / name, target_is_directory=True)
    values = {"model_family": "tiny-sd15", "device": "cpu", "worker_poll_s": 0.05, "worker_nice": 0,
              "backup_interval_h": 0, **values}
    return Settings(_env_file=None, data_dir=data_dir, **values)


def add_subject(conn, store, user_id: int, trigger: str, name: str = "", caption: str = ""):
    """A subject with two stored 64 px photos, as the intake leaves them (noise images: no face detector)."""
    subjects.ensure_user(conn, user_id, name or f"user{user_id}")
    subject = subjects.create_subject(conn, owner_id=user_id, trigger=trigger, trigger_key=trigger,
                                      class_noun="person", display_name=name or trigger, family="tiny-sd15")
    rng = np.random.default_rng(user_id)
    for n in range(2):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
        png = buffer.getvalue()
        sha = hashlib.sha256(png).hexdigest()
        crop = store.write_bytes(files.photo_crop_key(user_id, subject.id, sha), png)
        original = store.write_bytes(files.photo_original_key(user_id, subject.id, sha, "png"), png)
        photos.add_accepted_photo(conn, subject.id, original_name=f"{trigger}-{n}.png", sha256=sha,
                                  phash=f"{n:016x}", original_path=original, crop_path=crop, size_bytes=len(png),
                                  width=64, height=64, face_box=(0, 0, 64, 64),
                                  caption=caption or f"a photo of {trigger} person")
    return subject


def queue_training(conn, subject_id: int, user_id: int, **overrides) -> int:
    payload = {"subject_ids": [subject_id], "family": "tiny-sd15", "base_model": "tiny-sd15",
               "overrides": {"num_class_images": 2, "preview_every": 0, **overrides}}
    return jobs.enqueue_job(conn, "train", payload, user_id=user_id)


def stuck_jobs(db_path: Path) -> int:
    """Jobs left `running` once every worker is gone: what the issue's console waited on forever."""
    conn = connect(db_path, apply_migrations=False)
    try:
        return conn.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()[0]
    finally:
        conn.close()


# Damage, each kind the issue met.
def make_damaged(data_dir: Path, kind: str) -> None:
    """A data directory with a user, a stored file and a backup, then its database damaged as `kind`."""
    from storage.backups import backup_database

    db = data_dir / "likeness.sqlite3"
    conn = connect(db)
    for n in range(300):
        subjects.ensure_user(conn, n + 1, f"user {n} " * 8)
    backup_database(conn, data_dir / "backups", keep=3)
    (data_dir / "store" / "users" / "1").mkdir(parents=True, exist_ok=True)
    (data_dir / "store" / "users" / "1" / "photo.png").write_bytes(b"a stored photo")
    if kind == "garbage_wal":
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for n in range(3):
            subjects.ensure_user(conn, 10_000 + n, "written after the backup")
        crashed = data_dir.parent / "crashed"
        crashed.mkdir(exist_ok=True)
        for suffix in ("", "-wal"):  # the files as a killed process leaves them
            shutil.copyfile(f"{db}{suffix}", crashed / f"likeness.sqlite3{suffix}")
        conn.close()
        for suffix in ("", "-wal"):
            os.replace(crashed / f"likeness.sqlite3{suffix}", f"{db}{suffix}")
        with open(f"{db}-wal", "r+b") as fh:
            fh.seek(32 + 24 + 100)
            fh.write(b"garbage" * 10)
        return
    conn.close()
    size = db.stat().st_size
    if kind == "zero_byte":
        os.truncate(db, 0)
    elif kind == "truncated":
        os.truncate(db, size // 2 + 100)
    elif kind == "garbage_header":
        with open(db, "r+b") as fh:
            fh.write(os.urandom(100))
    elif kind == "garbage_pages":
        with open(db, "r+b") as fh:
            fh.seek(4096 * 2)
            fh.write(b"\xff" * 4096 * 4)


# A small disk.
def mount_small_disk(point: Path, size: int) -> str | None:
    """Mount a tmpfs of `size` bytes at point; None on success, else why not (then the scenario is skipped)."""
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or "mount failed")


def unmount(point: Path) -> None:
    subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def fill(folder: Path, leave: int = 0) -> None:
    with suppress(OSError), open(folder / "filler", "wb") as fh:
        while free_bytes(folder) > leave:
            fh.write(b"\0" * min(64 * 1024, max(4096, free_bytes(folder) - leave)))
            fh.flush()


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            found += [int(part) for part in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Running; a zombie waiting for a reaper holds nothing and counts as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_for(predicate, timeout_s: float, step_s: float = 0.05):
    """The predicate's first truthy value, or None at the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    return None


# Long-running consoles, and what a scenario checks afterwards.
class Console:
    """`python -m bot console ARGS` kept running, its output collected by a thread, fed lines on stdin."""

    def __init__(self, data_dir: Path, *args: str, **env: str) -> None:
        import threading

        self.process = subprocess.Popen([sys.executable, "-m", "bot", "console", *args], cwd=data_dir.parent,
                                        env=clean_env(data_dir, **env), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def send(self, *lines: str) -> None:
        self.process.stdin.write("".join(line + "\n" for line in lines))
        self.process.stdin.flush()

    def expect(self, text: str, timeout_s: float = START_TIMEOUT_S) -> bool:
        return wait_for(lambda: any(text in line for line in self.lines), timeout_s) is not None

    def close(self, timeout_s: float = START_TIMEOUT_S) -> int | None:
        """End of input ends the console; None if it had to be killed."""
        with suppress(OSError):
            self.process.stdin.close()
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    @property
    def out(self) -> str:
        return "\n".join(self.lines)


PARTIAL_MARKS = (".tmp-", ".restore-", ".part-")


def partial_files(*folders: Path) -> list[str]:
    """Files a failed write left behind: temp names, empty files, zips that do not open."""
    import zipfile

    found = []
    for folder in folders:
        for path in (p for p in folder.rglob("*") if p.is_file()) if folder.exists() else ():
            name = path.name
            broken_zip = name.endswith(".zip") and not zipfile.is_zipfile(path)
            journal = name.endswith("-journal") and not path.with_name(name[:-len("-journal")]).exists()
            empty = path.stat().st_size == 0 and path.suffix in (".zip", ".png", ".safetensors", ".sqlite3")
            if any(mark in name for mark in PARTIAL_MARKS) or broken_zip or journal or empty:
                found.append(str(path.relative_to(folder)))
    return found


def confirmed_rows(db_path: Path) -> set[tuple[str, int]]:
    """The rows users were told about (subjects, photos, shares, jobs), as (table, id)."""
    conn = connect(db_path, apply_migrations=False)
    try:
        return {(table, row[0]) for table in ("users", "subjects", "photos", "grants", "jobs", "generations")
                for row in conn.execute(f"SELECT id FROM {table}")}
    finally:
        conn.close()


def markers_found(data_dir: Path, markers: list[bytes]) -> list[str]:
    return [f"{path.relative_to(data_dir)}: {marker[:20]!r}" for path in data_dir.rglob("*") if path.is_file()
            for marker in markers if marker in path.read_bytes()]


# The tally every scenario reports into.
ZERO_FIGURES = ("stuck_jobs", "orphan_workers", "hangs", "tracebacks_shown", "forgotten_bytes_found",
                "undetected_damage", "render_steps_after_unshare", "confirmed_writes_lost",
                "forgotten_users_restored", "partial_files_left", "unsafe_restores", "second_instances_started",
                "full_disks_misread")


class Tally:
    def __init__(self) -> None:
        self.figures: dict[str, float] = {name: 0 for name in ZERO_FIGURES}
        self.recovery_s: dict[str, float | None] = {}
        self.details: dict[str, object] = {}
        self.exercised: list[str] = []
        self.not_exercised: dict[str, str] = {}  # scenario -> what it waited for that never happened

    def count_run(self, run: Run) -> None:
        self.figures["hangs"] += int(run.hung)
        self.figures["tracebacks_shown"] += run.tracebacks

    def add(self, figure: str, amount: float) -> None:
        self.figures[figure] = self.figures.get(figure, 0) + amount

    def ran(self, scenario: str) -> None:
        """The scenario provoked its fault for real (what it waited for happened)."""
        if scenario not in self.not_exercised and scenario not in self.exercised:
            self.exercised.append(scenario)

    def missed(self, scenario: str, why: str) -> None:
        """The scenario did not provoke its fault: it counts as not exercised, never as 0 problems."""
        self.not_exercised[scenario] = why
        if scenario in self.exercised:
            self.exercised.remove(scenario)

    def check(self, scenario: str, happened: object, why_not: str) -> bool:
        """ran() when `happened`, else missed(why_not); returns whether it happened."""
        if happened:
            self.ran(scenario)
        else:
            self.missed(scenario, why_not)
        return bool(happened)
