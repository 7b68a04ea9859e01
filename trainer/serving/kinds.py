"""Rendering each kind of generation: imagine, reroll, variation, upscale, headshots, card.

Every picture is made the same way: compose the plan's adapters, run text-to-image (or img2img from a source),
and, with two or more people, redraw each face with only that person's adapter (multi_person). Progress is
counted in denoising steps; a cancel stops at the next step (the pipeline's interrupt flag) and between pictures.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from storage.files import FileStore, UnsafePathError
from storage.lora_hash import a1111_lora_file, lora_hash_of_stored
from trainer.serving.adapter_cache import AdapterSource
from trainer.serving.cards import make_card
from trainer.serving.multi_person import REFINE_STRENGTH, distinct_people, refine_faces
from trainer.serving.pngmeta import SEED_RANGE, ImageParameters, LoraUse
from trainer.serving.requests import RenderPlan, img2img_steps
from trainer.serving.server import FamilyRuntime, Sampling
from trainer.job_api import JobError

CARD_LONG_SIDE = 1600
HEADSHOT_LABEL_CHARS = 40


class RenderStopped(Exception):
    """The job was cancelled or the worker is shutting down; `reason` is "cancel" or "shutdown"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class RenderProgress:
    """Counts denoising steps for the job row and stops the pipeline when the job must stop."""

    def __init__(self, report: Callable[..., None], stop_reason: Callable[[], str | None], total: int):
        self.report, self.stop_reason, self.total = report, stop_reason, max(1, total)
        self.done = 0
        self.message = "Starting"

    def start(self, message: str) -> None:
        self.check()
        self.message = message
        self.report(step=min(self.done, self.total), total=self.total, message=message)

    def on_step(self, pipe, step: int) -> None:
        self.done += 1
        self.report(step=min(self.done, self.total), total=self.total, message=self.message)
        if self.stop_reason():
            pipe._interrupt = True  # diffusers pipelines check this flag before each step

    def check(self) -> None:
        reason = self.stop_reason()
        if reason:
            raise RenderStopped(reason)


@dataclass
class RenderedImage:
    image: Image.Image
    parameters: ImageParameters
    label: str | None = None  # headshots: what the contact sheet writes under it


@dataclass
class Rendered:
    images: list[RenderedImage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def picture_count(plan: RenderPlan) -> int:
    if plan.kind == "headshots":
        return len(plan.headshot_prompts)
    return 1 if plan.kind in ("upscale", "card") else plan.count


def estimated_steps(plan: RenderPlan) -> int:
    """Denoising steps the plan will take, for the progress bar."""
    if plan.kind in ("variation", "upscale"):
        per_picture = int(img2img_steps(plan.steps, plan.strength) * plan.strength)
    else:
        per_picture = plan.steps
    people = len(distinct_people(plan.people))
    if people >= 2:
        per_picture += people * int(img2img_steps(plan.steps, REFINE_STRENGTH) * REFINE_STRENGTH)
    return per_picture * picture_count(plan)


class Renderer:
    def __init__(self, plan: RenderPlan, runtime: FamilyRuntime, progress: RenderProgress, store: FileStore,
                 model_label: str, model_hash: str | None = None):
        self.plan, self.runtime, self.progress, self.store = plan, runtime, progress, store
        self.model_label, self.model_hash = model_label, model_hash
        self.result = Rendered(warnings=list(plan.warnings))
        choice = runtime.scheduler_choice(plan.scheduler)
        self.sampler_label = choice.label
        if choice.warning:
            self.result.warnings.append(choice.warning)

    def render(self) -> Rendered:
        kind = self.plan.kind
        if kind in ("imagine", "reroll"):
            self._from_prompt([self.plan.prompt] * self.plan.count)
        elif kind == "headshots":
            self._from_prompt(list(self.plan.headshot_prompts), labelled=True)
        elif kind == "variation":
            self._variations()
        elif kind == "upscale":
            self._upscale()
        elif kind == "card":
            self._card()
        return self.result

    # Kinds.
    def _from_prompt(self, prompts: list[str], labelled: bool = False) -> None:
        for index, prompt in enumerate(prompts):
            self.progress.start(f"Drawing picture {index + 1} of {len(prompts)}")
            sampling = self.plan.sampling(prompt=prompt, seed=self._seed(index))
            image = self._picture(sampling)
            label = headshot_label(prompt, self.plan) if labelled else None
            self.result.images.append(RenderedImage(image, self._parameters(sampling), label))

    def _variations(self) -> None:
        source = self._source_image()
        strength = self.plan.strength
        for index in range(self.plan.count):
            self.progress.start(f"Drawing variation {index + 1} of {self.plan.count}")
            sampling = self.plan.sampling(seed=self._seed(index), steps=img2img_steps(self.plan.steps, strength))
            image = self._picture(sampling, init=source, strength=strength)
            extra = {"Denoising strength": strength}
            self.result.images.append(RenderedImage(image, self._parameters(sampling, extra)))

    def _upscale(self) -> None:
        source = self._source_image()
        width, height = self.plan.output_size
        enlarged = source.resize((width, height), Image.Resampling.LANCZOS)
        strength = self.plan.strength
        self.progress.start(f"Upscaling to {width}x{height}")
        sampling = self.plan.sampling(width=width, height=height, steps=img2img_steps(self.plan.steps, strength))
        image = self._picture(sampling, init=enlarged, strength=strength)
        extra = {"Denoising strength": strength, "Hires upscale": self.plan.scale, "Hires upscaler": "Lanczos"}
        self.result.images.append(RenderedImage(image, self._parameters(sampling, extra)))

    def _card(self) -> None:
        self.progress.start("Drawing the card picture")
        sampling = self.plan.sampling()
        picture = self._picture(sampling)
        card = make_card(picture, self.plan.greeting, self.plan.layout, CARD_LONG_SIDE)
        extra = {"Card layout": self.plan.layout}
        self.result.images.append(RenderedImage(card, self._parameters(sampling, extra)))

    # One picture.
    def _picture(self, sampling: Sampling, init: Image.Image | None = None, strength: float | None = None):
        self.runtime.use_adapters(self.plan.composition())
        if init is None:
            image = self.runtime.text2img(sampling, self.progress.on_step)
        else:
            image = self.runtime.img2img(init, sampling, strength, self.progress.on_step)
        self.progress.check()
        if len(distinct_people(self.plan.people)) >= 2:
            self.progress.message = "Redrawing each face with its own adapter"
            refined = refine_faces(self.runtime, image, self.plan.people, sampling, self.progress.on_step)
            self.progress.check()
            image = refined.image
            for warning in refined.warnings:
                if warning not in self.result.warnings:
                    self.result.warnings.append(warning)
        return image

    def _seed(self, index: int) -> int:
        return (self.plan.seed + index) % SEED_RANGE

    def _source_image(self) -> Image.Image:
        try:
            data = self.store.read_bytes(self.plan.source_key)
            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGB")
        except (OSError, UnsafePathError, UnidentifiedImageError):
            raise JobError("The picture this one starts from is missing or damaged; try /imagine instead.") from None

    def _parameters(self, sampling: Sampling, extra: dict | None = None) -> ImageParameters:
        loras = [LoraUse(p.trigger, p.weight, _lora_hash(p.source)) for p in self.plan.people]
        loras += [LoraUse(s.name, s.weight, _lora_hash(s.source)) for s in self.plan.styles]
        fields = dict(extra or {})
        if len(distinct_people(self.plan.people)) >= 2:
            fields["Face refine"] = f"per person, strength {REFINE_STRENGTH:g}"
        negative = "" if self.runtime.base == "flux" else sampling.negative_prompt  # FLUX does not use it
        return ImageParameters(
            prompt=sampling.prompt, negative_prompt=negative, steps=sampling.steps,
            sampler=self.sampler_label, cfg_scale=sampling.guidance, seed=sampling.seed, width=sampling.width,
            height=sampling.height, model=self.model_label, loras=loras, extra=fields, model_hash=self.model_hash,
        )


def _lora_hash(source: AdapterSource) -> str:
    """A1111's hash of the file A1111 loads for this adapter (a subject's kohya copy when it has one, a style's own
    file), for PNG metadata; "" (left out) when that file cannot be read."""
    path = a1111_lora_file(source.path) if source.adapter_id is not None else source.path
    try:
        return lora_hash_of_stored(path, source.sha256)
    except (OSError, ValueError):
        return ""


def headshot_label(prompt: str, plan: RenderPlan) -> str:
    """A short caption for the contact sheet: the prompt's first phrase that does not name the person."""
    names = [p.prompt_name for p in plan.people] + [p.trigger for p in plan.people]
    for part in prompt.split(","):
        text = part.strip()
        if text and not any(re.search(rf"(?i)(?<!\w){re.escape(n)}(?!\w)", text) for n in names):
            return text[:HEADSHOT_LABEL_CHARS]
    return prompt[:HEADSHOT_LABEL_CHARS]
