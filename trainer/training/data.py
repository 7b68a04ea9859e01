"""Training examples: photos checked and loaded before any model, and the per-step batch plan."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from trainer.training.config import TrainConfig, class_prompt_for, instance_prompt_for
from trainer.training.errors import TrainingError
from trainer.training.seeding import step_generator

_MIN_PHOTO_SIDE = 32


@dataclass(frozen=True)
class TrainingImage:
    pixels: torch.Tensor  # [3, res, res] float32 in [-1, 1]
    original_size: tuple[int, int]  # (height, width) before resizing
    crop_top_left: tuple[int, int]  # (top, left) of the centre crop after resizing


@dataclass(frozen=True)
class InstanceExample:
    subject_index: int
    trigger: str
    class_noun: str
    prompt: str
    image: TrainingImage


@dataclass(frozen=True)
class ClassSet:
    noun: str
    prompt: str
    images: list[TrainingImage]


@dataclass(frozen=True)
class BatchPlan:
    """Which examples one step trains on: instance examples first, then one class image each."""

    instance_indices: list[int]
    class_picks: list[tuple[str, int]]  # (class noun, index into that noun's class set)


def load_instance_examples(config: TrainConfig) -> list[InstanceExample]:
    """Every subject's photos as training examples; a missing or unreadable photo fails the job
    with TrainingError('bad_photo') naming each bad photo."""
    problems = []
    examples = []
    for subject_index, subject in enumerate(config.subjects):
        for number, photo in enumerate(subject.photos, start=1):
            label = f"photo {number} of {subject.trigger} ({Path(photo.crop_path).name})"
            try:
                image = load_training_image(Path(photo.crop_path), config.resolution)
            except _PhotoProblem as problem:
                problems.append(f"{label} {problem}")
                continue
            prompt = instance_prompt_for(subject, photo)
            examples.append(InstanceExample(subject_index, subject.trigger, subject.class_noun, prompt, image))
    if problems:
        raise TrainingError(
            "bad_photo",
            "Cannot train: " + "; ".join(problems) + ".",
            "Upload the photo again, or remove it from the subject, then retrain.",
        )
    return examples


def load_class_set(noun: str, paths: list[Path], resolution: int) -> ClassSet:
    images = []
    for path in paths:
        try:
            images.append(load_training_image(path, resolution))
        except _PhotoProblem:
            continue  # a damaged cache file is regenerated on the next job; skip it here
    return ClassSet(noun, class_prompt_for(noun), images)


class _PhotoProblem(Exception):
    pass


def load_training_image(path: Path, resolution: int) -> TrainingImage:
    """Resize the shorter side to `resolution` and centre-crop a square, as the DreamBooth scripts do."""
    image = _open_rgb(path)
    width, height = image.size
    scale = resolution / min(width, height)
    resized = image.resize(
        (max(resolution, round(width * scale)), max(resolution, round(height * scale))), Image.Resampling.LANCZOS
    )
    left = (resized.width - resolution) // 2
    top = (resized.height - resolution) // 2
    cropped = resized.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(cropped, dtype=np.float32) / 127.5 - 1.0
    pixels = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return TrainingImage(pixels, (height, width), (top, left))


def _open_rgb(path: Path) -> Image.Image:
    if not path.is_file():
        raise _PhotoProblem("is missing")
    try:
        with Image.open(path) as probe:
            probe.verify()
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise _PhotoProblem(f"is not a readable image ({type(error).__name__})") from None
    if min(image.size) < _MIN_PHOTO_SIDE:
        raise _PhotoProblem(f"is too small ({image.width}x{image.height} pixels)")
    return image


def photo_digest(config: TrainConfig) -> str:
    """Hash of every photo's bytes, so a checkpoint is not resumed onto changed photos."""
    digest = hashlib.sha256()
    for subject in config.subjects:
        for photo in subject.photos:
            digest.update(Path(photo.crop_path).read_bytes())
    return digest.hexdigest()


def plan_batch(step: int, seed: int, batch_size: int, instance_nouns: list[str],
               class_sizes: dict[str, int] | None) -> BatchPlan:
    """The examples for `step`, a pure function of (seed, step).

    Instance examples are drawn epoch by epoch from seeded permutations, so each photo is seen once
    per epoch; each instance example is paired with a random image of its own class noun's set.
    """
    count = len(instance_nouns)
    positions = range(step * batch_size, (step + 1) * batch_size)
    indices = []
    for position in positions:
        epoch, offset = divmod(position, count)
        order = torch.randperm(count, generator=step_generator(seed, epoch, "epoch-order"))
        indices.append(int(order[offset]))
    picks: list[tuple[str, int]] = []
    if class_sizes is not None:
        generator = step_generator(seed, step, "class-pick")
        for index in indices:
            noun = instance_nouns[index]
            picks.append((noun, int(torch.randint(class_sizes[noun], (1,), generator=generator))))
    return BatchPlan(indices, picks)
