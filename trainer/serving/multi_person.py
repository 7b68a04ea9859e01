"""Two or more people in one picture: compose, find the faces, then redraw each face with only its person's adapter.

Composing several likeness adapters with `set_adapters` blends identities: every face gets a bit of everyone. So
after the composed picture is made, the faces are detected (intake.faces, offline Haar cascades), the largest N
(N = people) are taken and assigned to people left to right, in prompt order. Each face's padded square crop is
redrawn with img2img at the model's working size, with ONLY that person's adapter active and a prompt that names
only that person, then pasted back through a feathered elliptical mask so no seam shows. When fewer faces than
people are found, the composed picture is kept and the job says so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from intake.faces import FaceBox, detect_faces
from trainer.serving.requests import Person, img2img_steps
from trainer.serving.server import FamilyRuntime, Sampling, StepHook

REFINE_STRENGTH = 0.45  # redraws identity features, keeps pose, light and framing of the composed face
CROP_MARGIN = 0.5  # crop side = face width x (1 + 2 x margin)
FEATHER = 0.08  # blur radius of the paste mask, as a fraction of the crop side
REFINE_SEED_STEP = 7919  # each face gets its own seed, derived from the image's


@dataclass(frozen=True)
class FaceAssignment:
    person: Person
    face: FaceBox  # detected box, in the picture's pixels
    crop: FaceBox  # the padded square that was redrawn


@dataclass
class RefineResult:
    image: Image.Image
    assignments: list[FaceAssignment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def distinct_people(people: Sequence[Person]) -> list[Person]:
    seen, result = set(), []
    for person in people:
        if person.subject_id not in seen:
            seen.add(person.subject_id)
            result.append(person)
    return result


def assign_faces(faces: Sequence[FaceBox], people: Sequence[Person]) -> list[tuple[Person, FaceBox]]:
    """The len(people) largest faces, left to right, paired with people in prompt order ([] if too few)."""
    if len(faces) < len(people):
        return []
    largest = sorted(faces, key=lambda f: f.area, reverse=True)[: len(people)]
    return list(zip(people, sorted(largest, key=lambda f: (f.center[0], f.y))))


def person_prompt(person: Person, prompt: str, others: Sequence[Person]) -> str:
    """The scene prompt with every other person's name taken out, led by this person's."""
    scene = prompt
    for other in others:
        if other.subject_id == person.subject_id:
            continue
        for name in (other.prompt_name, other.trigger):
            scene = re.sub(rf"(?i)(?<!\w){re.escape(name)}(?!\w)", "", scene)
    scene = re.sub(r"\s+([,.;])", r"\1", re.sub(r"\s{2,}", " ", scene)).strip(" ,;")
    return f"close-up of the face of {person.prompt_name}, {scene}" if scene else f"{person.prompt_name}"


def refine_faces(runtime: FamilyRuntime, image: Image.Image, people: Sequence[Person], sampling: Sampling,
                 on_step: StepHook | None = None, strength: float = REFINE_STRENGTH,
                 work_size: int | None = None) -> RefineResult:
    """Redraw each person's face with only their adapter; `sampling` is the composed picture's."""
    people = distinct_people(people)
    result = RefineResult(image.convert("RGB"))
    faces = detect_faces(np.asarray(result.image), min_size=max(24, min(image.size) // 12))
    pairs = assign_faces(faces, people)
    if not pairs:
        result.warnings.append(
            f"Only {len(faces)} of the {len(people)} faces could be found, so the faces were not redrawn one "
            "person at a time; the likenesses may be blended."
        )
        return result
    size = work_size or runtime.family.defaults.resolution
    for index, (person, face) in enumerate(pairs):
        crop = face.square_crop(*result.image.size, margin=CROP_MARGIN)
        runtime.use_adapters([(person.source, person.weight)])
        face_sampling = replace(
            sampling, prompt=person_prompt(person, sampling.prompt, people), width=size, height=size,
            steps=img2img_steps(sampling.steps, strength),
            seed=(sampling.seed + REFINE_SEED_STEP * (index + 1)) % 2**63,
        )
        region = result.image.crop((crop.x, crop.y, crop.right, crop.bottom))
        redrawn = runtime.img2img(region, face_sampling, strength, on_step)
        paste_feathered(result.image, redrawn, crop)
        result.assignments.append(FaceAssignment(person, face, crop))
    return result


def feather_mask(side: int) -> Image.Image:
    """An ellipse filling the square, with a soft edge, so the redrawn face fades into the picture."""
    mask = Image.new("L", (side, side), 0)
    inset = max(1, round(side * FEATHER))
    ImageDraw.Draw(mask).ellipse((inset, inset, side - inset - 1, side - inset - 1), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(radius=max(1, inset / 2)))


def paste_feathered(picture: Image.Image, redrawn: Image.Image, crop: FaceBox) -> None:
    patch = redrawn.convert("RGB").resize((crop.w, crop.h), Image.Resampling.LANCZOS)
    picture.paste(patch, (crop.x, crop.y), feather_mask(crop.w))
