"""The generation server: one resident base pipeline per model family, adapters swapped on it.

Memory policy:
- One base pipeline per family, loaded lazily through the family interface (fp16, bf16 for FLUX, on CUDA; fp32 on
  CPU; NF4 denoiser and T5 where the family trains in NF4 and a GPU is present, or as configured).
- img2img (variations, upscale, face refine) runs on pipelines built with `AutoPipelineForImage2Image.from_pipe`
  from the same components: no second copy of any weight.
- Adapters wait in memory as plain tensors in an `AdapterCache` bounded by `settings.adapter_cache_mb`; a switch
  copies them into a fixed set of LoRA slots on the resident pipeline, never a reload of the base model.
- `settings.serving_compile` (auto: on CUDA only) compiles the denoiser once; slot switches never recompile it.
- The server lives in `worker.resources` for the life of the worker process and is closed with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting
from PIL import Image

from storage.lora_hash import checkpoint_short_hash
from trainer.families import get_family
from trainer.families.base import ModelFamily, inference_device, inference_dtype
from trainer.serving.adapter_cache import AdapterCache, AdapterSource
from trainer.serving.lora_tensors import TEXT_ENCODERS
from trainer.serving.safety import NsfwFilter
from trainer.serving.schedulers import SchedulerChoice, build_scheduler, choose_scheduler
from trainer.training.memory import free_memory

log = logging.getLogger(__name__)

StepHook = Callable[[Any, int], None]  # (pipeline, step index) after every denoising step


@dataclass(frozen=True)
class Sampling:
    """One pipeline call's text and sampling parameters."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    scheduler: str | None = None  # ddim, pndm, euler, euler_a, dpmpp_2m; None: the model's own


class FamilyRuntime:
    """A resident base pipeline, its adapter cache, and the img2img/inpaint views of the same weights."""

    def __init__(self, family: ModelFamily, pipe, device: torch.device, cache_mb: float, compile: bool = False,
                 min_rank: int = 0):
        self.family = family
        self.pipe = pipe
        self.device = device
        components = {family.denoiser_name: family.denoiser(pipe)}
        components.update({name: getattr(pipe, name) for name in TEXT_ENCODERS
                           if getattr(pipe, name, None) is not None})
        self.compiled = compile
        if compile:  # compiled once, before any slot exists; hotswapped slots never recompile it
            components[family.denoiser_name].compile()
        self.adapters = AdapterCache(pipe, components, cache_mb, denoiser_prefix=family.denoiser_name,
                                     compiled=compile, min_rank=min_rank, pin=device.type == "cuda")
        self._scheduler_config = dict(pipe.scheduler.config)
        self._img2img = None
        self._inpaint = None

    @property
    def base(self) -> str:
        return self.family.spec.base

    # Views on the same components.
    def img2img_pipe(self):
        if self._img2img is None:
            self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    def inpaint_pipe(self):
        if self._inpaint is None:
            self._inpaint = AutoPipelineForInpainting.from_pipe(self.pipe)
            self._inpaint.set_progress_bar_config(disable=True)
        return self._inpaint

    # Adapters.
    def use_adapters(self, uses: Sequence[tuple[AdapterSource, float]]) -> list[str]:
        """Copy these adapters into LoRA slots and make exactly them active with these weights; [] = base model.
        Returns the slot names, in the order given."""
        return self.adapters.use(uses)

    def active_adapters(self) -> list[str]:
        """The active slots (compiled: every slot, unused ones zeroed)."""
        return self.adapters.slots.active()

    # Calls.
    def scheduler_choice(self, name: str | None) -> SchedulerChoice:
        return choose_scheduler(name, self.base, self._scheduler_config)

    def text2img(self, sampling: Sampling, on_step: StepHook | None = None) -> Image.Image:
        return self._call(self.pipe, sampling, on_step)

    def img2img(self, image: Image.Image, sampling: Sampling, strength: float,
                on_step: StepHook | None = None) -> Image.Image:
        image = image.convert("RGB")
        if image.size != (sampling.width, sampling.height):
            image = image.resize((sampling.width, sampling.height), Image.Resampling.LANCZOS)
        return self._call(self.img2img_pipe(), sampling, on_step, image=image, strength=strength)

    def _call(self, pipe, sampling: Sampling, on_step: StepHook | None, **extra: Any) -> Image.Image:
        own_scheduler = pipe.scheduler
        pipe.scheduler = build_scheduler(self.scheduler_choice(sampling.scheduler), self._scheduler_config, self.base)
        try:
            return self._run(pipe, sampling, on_step, **extra)
        finally:  # the resident pipeline keeps the model's own scheduler (class images use it too)
            pipe.scheduler = own_scheduler

    def _run(self, pipe, sampling: Sampling, on_step: StepHook | None, **extra: Any) -> Image.Image:
        kwargs = {
            **self.family.generation_kwargs(),
            "prompt": sampling.prompt,
            "num_inference_steps": sampling.steps,
            "guidance_scale": sampling.guidance,
            "height": sampling.height,
            "width": sampling.width,
            "generator": torch.Generator("cpu").manual_seed(sampling.seed),
            **extra,
        }
        if self.base != "flux":  # FLUX.1 [dev] is guidance-distilled: it has no negative-prompt branch
            kwargs["negative_prompt"] = sampling.negative_prompt or None
        if on_step is not None:
            kwargs["callback_on_step_end"] = _step_callback(on_step)
        with torch.inference_mode():
            return pipe(**kwargs).images[0]


def _step_callback(on_step: StepHook):
    def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        on_step(pipe, step)
        return callback_kwargs

    return callback


def _compile_wanted(setting: str, device: torch.device) -> bool:
    """auto: compile where it pays (CUDA); on a CPU the compile takes longer than the renders it speeds up."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


class GenerationServer:
    """Resident pipelines by family; the worker keeps one in `worker.resources` for its whole life."""

    def __init__(self, settings, *, device: str | torch.device | None = None, compile: bool | None = None):
        self.settings = settings
        self.device = torch.device(device) if device is not None else inference_device(settings.device)
        self.cache_mb = settings.adapter_cache_mb
        self.compile = compile if compile is not None else _compile_wanted(settings.serving_compile, self.device)
        self.pipeline_loads = 0
        self._runtimes: dict[str, FamilyRuntime] = {}
        self._nsfw: NsfwFilter | None | bool = False  # False: not looked for yet

    def runtime(self, family_name: str | None = None) -> FamilyRuntime:
        name = family_name or self.settings.model_family
        runtime = self._runtimes.get(name)
        if runtime is None:
            runtime = self._load(name)
            self._runtimes[name] = runtime
        return runtime

    def _load(self, name: str) -> FamilyRuntime:
        family = get_family(name)
        model_path = self.settings.model_path if name == self.settings.model_family else None
        path = family.resolve_model_path(model_path, self.settings.models_dir)
        dtype = inference_dtype(family, self.device)
        nf4 = self._use_nf4(family)
        log.info("loading %s for generation on %s (%s%s)", name, self.device, dtype, ", NF4" if nf4 else "")
        pipe = family.load_pipeline(path, self.device, dtype, quantize_nf4=nf4)
        self.pipeline_loads += 1
        return FamilyRuntime(family, pipe, self.device, self.cache_mb, compile=self.compile,
                             min_rank=self.settings.lora_slot_rank)

    def _use_nf4(self, family: ModelFamily) -> bool:
        configured = self.settings.generation_nf4
        if configured is not None:
            return bool(configured) and family.spec.supports_nf4
        return family.defaults.quantize_base == "nf4" and self.device.type == "cuda"

    def model_label(self, family_name: str | None = None) -> str:
        """The base model as written into PNG metadata: the family name, or the model folder/hub id's last part."""
        name = family_name or self.settings.model_family
        path = self.settings.model_path if name == self.settings.model_family else None
        return Path(path.rstrip("/")).name if path else name

    def model_hash(self, family_name: str | None = None) -> str | None:
        """A1111's `Model hash` of the base model when it is a single checkpoint file; None for a diffusers folder
        or hub id (which A1111 cannot load, and has no hash for)."""
        name = family_name or self.settings.model_family
        return checkpoint_short_hash(self.settings.model_path) if name == self.settings.model_family else None

    @property
    def nsfw_filter(self) -> NsfwFilter | None:
        if self._nsfw is False:
            self._nsfw = NsfwFilter.from_settings(self.settings, self.device)
        return self._nsfw  # type: ignore[return-value]

    # Adapter housekeeping.
    def cached_adapter_ids(self) -> list[int]:
        return sorted({i for runtime in self._runtimes.values() for i in runtime.adapters.cached_adapter_ids()})

    def evict_missing(self, existing_adapter_ids, existing_style_keys=None) -> list[str]:
        """Drop cached adapters whose rows are gone (forgotten users, deleted subjects or styles)."""
        gone = []
        for runtime in self._runtimes.values():
            gone += runtime.adapters.evict_missing(existing_adapter_ids, existing_style_keys)
        if gone:
            log.info("evicted %d adapters whose rows are gone", len(gone))
        return gone

    def free_memory(self) -> None:
        """Return cached allocator blocks after a failure (an out-of-memory error, say)."""
        free_memory()

    def release_gpu(self) -> None:
        """Drop the resident pipelines so training can have the whole GPU; the next request loads them again."""
        for runtime in self._runtimes.values():
            runtime.adapters.clear()
        self._runtimes.clear()
        self.free_memory()

    def close(self) -> None:
        self.release_gpu()
