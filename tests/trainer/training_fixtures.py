"""Shared helpers for the training tests (import explicitly; conftest.py belongs to others).

Session-scoped fixtures build each tiny model once and share one class-image cache, so only the
first job per family generates class images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from trainer.training.config import PhotoSpec, SubjectSpec, TrainConfig


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def shared_class_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("class-cache")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder, "subject-a", count=3, seed=1)
    write_photos(folder, "subject-b", count=2, seed=2)
    return folder


def write_photos(folder: Path, name: str, count: int, seed: int) -> list[Path]:
    """Synthetic 'selfies': a bright face-like disc on a coloured background, varied per photo."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        height, width = 96, 80
        yy, xx = np.mgrid[0:height, 0:width]
        image = np.zeros((height, width, 3), dtype=np.float32)
        image[:] = rng.uniform(0, 255, size=3)
        centre = (height / 2 + rng.uniform(-6, 6), width / 2 + rng.uniform(-6, 6))
        disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < (width / 3) ** 2
        image[disc] = [224, 172, 140]
        image += rng.normal(0, 8, size=image.shape)
        path = folder / f"{name}-{index}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def subject(photo_dir: Path, name: str = "subject-a", trigger: str = "rraj", noun: str = "person",
            captions: list[str] | None = None) -> SubjectSpec:
    paths = sorted(photo_dir.glob(f"{name}-*.png"))
    captions = captions or [""] * len(paths)
    return SubjectSpec(trigger=trigger, class_noun=noun,
                       photos=[PhotoSpec(crop_path=p, caption=c) for p, c in zip(paths, captions, strict=True)])


def make_config(family: str, job_dir: Path, models_dir: Path, class_cache: Path, subjects: list[SubjectSpec],
                **overrides) -> TrainConfig:
    values = dict(
        models_dir=models_dir, output_dir=job_dir / "out", checkpoint_dir=job_dir / "checkpoints",
        class_cache_dir=class_cache, subjects=subjects, steps=4, num_class_images=2,
        preview_every=0, checkpoint_every=0, optimizer="adamw",
    )
    values.update(overrides)
    return TrainConfig.for_family(family, **values)


@dataclass
class RecordingHooks:
    """Hooks that record what the trainer reports and can ask it to stop after a given step."""

    stop_after: int | None = None
    stop_reason: str = "cancel"
    progress_steps: list[int] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    previews: dict[int, dict] = field(default_factory=dict)
    stop_checks: int = 0
    between_calls: int = 0

    def progress(self, p) -> None:
        self.messages.append(p.message)
        if p.message.startswith("Training step"):
            self.progress_steps.append(p.step)

    def preview(self, step, images) -> None:
        self.previews[step] = images

    def should_stop(self):
        self.stop_checks += 1
        done = self.progress_steps[-1] if self.progress_steps else 0
        if self.stop_after is not None and done >= self.stop_after:
            return self.stop_reason
        return None

    def between_steps(self) -> None:
        self.between_calls += 1


def read_tensors(path: Path) -> dict:
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return dict(handle.metadata() or {})
