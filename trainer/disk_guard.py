"""A full disk in the worker: refused before training starts, and told plainly when it happens anyway.

Before a training job the worker compares the free space with what the job will write: its checkpoints (adapter
weights plus two optimizer moments, KEEP of them), the final adapter in two formats, its previews and any class
images it must make. When a write fails for lack of space anyway (the checkpoint's torch stream error, the
safetensors error, SQLITE_FULL), the job fails with the disk-full sentence and the host log says how much is free.

Recording that outcome needs a little room in the database's WAL itself. A small reserve file, made when there is
space and deleted when a write fails, gives the worker that room, so the job is never left `running`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from intake.family_specs import family_spec
from storage.disk import DISK_FULL, DiskFullError, check_free_space, free_bytes, is_disk_full, log_disk_full
from storage.jobs import Job
from storage.settings import Settings
from trainer.job_api import JobOutcome

log = logging.getLogger(__name__)

T = TypeVar("T")
RESERVE_NAME = ".disk-reserve"
RESERVE_BYTES = 2 * 1024 * 1024
CHECKPOINTS_KEPT = 2  # trainer.training.checkpoints.KEEP
# Approximate fp32 LoRA weights at rank 4 on the attention layers of each base (scaled by rank).
ADAPTER_BYTES_AT_RANK_4 = {"sd15": 3_300_000, "sdxl": 23_000_000, "flux": 38_000_000}
TINY_ADAPTER_BYTES_AT_RANK_4 = 200_000
PNG_BYTES_PER_PIXEL = 1.5
SAFETY_FACTOR = 1.25


def training_bytes_needed(settings: Settings, job: Job) -> int:
    """About how much a training job writes: checkpoints, the adapter twice, previews and class images."""
    spec = family_spec(job.payload.get("family", settings.model_family))
    overrides = job.payload.get("overrides") or {}
    defaults = spec.defaults
    rank = int(overrides.get("rank") or defaults.rank)
    steps = int(overrides.get("steps") or settings.train_steps or defaults.steps)
    resolution = int(overrides.get("resolution") or defaults.resolution)
    per_rank4 = TINY_ADAPTER_BYTES_AT_RANK_4 if spec.tiny else ADAPTER_BYTES_AT_RANK_4[spec.base]
    adapter = per_rank4 * rank / 4
    checkpoints = CHECKPOINTS_KEPT * 3 * adapter  # weights + Adam's two moments
    picture = resolution * resolution * PNG_BYTES_PER_PIXEL
    preview_every = overrides.get("preview_every", defaults.preview_every)
    previews = (steps // preview_every if preview_every else 0) * picture
    class_images = int(overrides.get("num_class_images") or defaults.num_class_images) * picture
    return int(SAFETY_FACTOR * (checkpoints + 2 * adapter + previews + class_images))


def check_space_for(settings: Settings, job: Job) -> None:
    """Raise DiskFullError (with the figures) before a training job that cannot fit."""
    if job.kind == "train":
        check_free_space(settings.data_dir, training_bytes_needed(settings, job) + RESERVE_BYTES,
                         "this training job")


def disk_full_outcome(exc: BaseException, settings: Settings, job: Job) -> JobOutcome | None:
    """The failed outcome for a job that hit a full disk (with a log line for the host), else None."""
    if isinstance(exc, DiskFullError):
        return JobOutcome("failed", error=str(exc))  # refused early; already logged with its figures
    if not is_disk_full(exc, settings.data_dir):
        return None
    log_disk_full(f"job {job.id} ({job.kind})", settings.data_dir, exc)
    return JobOutcome("failed", error=DISK_FULL)


class DiskReserve:
    """A file of RESERVE_BYTES kept in the data directory, to be given up when the disk fills."""

    def __init__(self, data_dir: Path, size: int = RESERVE_BYTES) -> None:
        self.path = Path(data_dir) / RESERVE_NAME
        self.size = size

    def ensure(self) -> None:
        """Make the reserve when it is missing and there is clearly room for it."""
        if self.path.exists() or free_bytes(self.path.parent) < 4 * self.size:
            return
        try:
            with open(self.path, "wb") as fh:
                fh.write(b"\0" * self.size)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            self.path.unlink(missing_ok=True)

    def release(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("gave up the %d-byte disk reserve to record a job's outcome", self.size)
        return True

    def write(self, write: Callable[[], T]) -> T:
        """Run a database write; when the disk is full, give up the reserve and try once more."""
        try:
            return write()
        except Exception as exc:
            if not is_disk_full(exc, self.path.parent) or not self.release():
                raise
        return write()
