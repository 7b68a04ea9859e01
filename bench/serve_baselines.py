"""bench.serve's set-up: random adapters shaped like the trainer's, and the plain diffusers baselines as an expert
writes them (adapters read into memory first; hotswap set up as diffusers' docs say), plus the timing helpers that
bench.serve and bench.serve_published share."""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from storage.settings import Settings
from trainer.families import get_family
from trainer.families.base import inference_dtype
from trainer.serving.adapter_cache import AdapterSource
from trainer.serving.server import GenerationServer, Sampling

PROMPT = "a photo of rraj person as a Van Gogh painting"
HOTSWAP_NAME = "default"


def write_random_adapters(family, model_path: str, folder: Path, count: int, device,
                          dtype: torch.dtype | None = None) -> list[AdapterSource]:
    """`count` LoRA files shaped like the trainer's (family default rank and targets), with random weights:
    the first through peft and the pipeline's `save_lora_weights`, the others the same keys with other values."""
    pipe = family.load_pipeline(model_path, device, dtype or inference_dtype(family, device))
    denoiser = family.denoiser(pipe)
    config = LoraConfig(r=family.defaults.rank, lora_alpha=family.defaults.alpha, init_lora_weights="gaussian",
                        target_modules=list(family.defaults.target_modules))
    denoiser.add_adapter(config, adapter_name="bench")
    layers = {family.denoiser_name: get_peft_model_state_dict(denoiser, adapter_name="bench")}
    family.save_lora_weights(folder / "user0", layers, {family.denoiser_name: config.to_dict()})
    del pipe, denoiser
    gc.collect()
    first = folder / "user0" / "pytorch_lora_weights.safetensors"
    with safe_open(str(first), framework="pt") as handle:
        metadata, keys = handle.metadata(), list(handle.keys())
        shapes = {key: handle.get_slice(key).get_shape() for key in keys}
    sources = []
    for index in range(count):
        path = folder / f"user{index}" / "pytorch_lora_weights.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(index)
        save_file({key: torch.randn(shapes[key], generator=generator) * 0.05 for key in keys}, str(path), metadata)
        sources.append(AdapterSource(f"user{index}", path, adapter_id=index + 1))
    return sources


class Bench:
    def __init__(self, family_name: str, model_path: str | None, work: Path, models_dir: Path, device: str,
                 resolution: int, compile: bool = False):
        self.family = get_family(family_name)
        data = work / "data"
        data.mkdir(parents=True, exist_ok=True)
        if not (data / "models").exists():
            (data / "models").symlink_to(models_dir.resolve(), target_is_directory=True)
        self.settings = Settings(data_dir=data, model_family=family_name, model_path=model_path, device=device,
                                 adapter_cache_mb=4096)
        self.model_path = self.family.resolve_model_path(model_path, models_dir)
        self.device = torch.device(device)
        self.compile = compile
        self.sampling = Sampling(PROMPT, "", resolution, resolution, self.family.defaults.inference_steps,
                                 self.family.defaults.guidance_scale, 1)
        self.state_dicts: dict[str, dict[str, torch.Tensor]] = {}  # each adapter's file, read into memory once

    def read_state_dicts(self, sources: list[AdapterSource]) -> None:
        for source in sources:
            if source.key not in self.state_dicts:
                self.state_dicts[source.key] = load_file(str(source.path))

    def runtime(self, cache_mb: float | None = None):
        settings = self.settings
        if cache_mb is not None:
            settings = settings.model_copy(update={"adapter_cache_mb": cache_mb})
        return GenerationServer(settings, device=self.device, compile=self.compile).runtime()

    def plain_pipeline(self):
        return self.plain_pipeline_in(inference_dtype(self.family, self.device))

    def plain_pipeline_in(self, dtype: torch.dtype):
        pipe = self.family.load_pipeline(self.model_path, self.device, dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def load_plain(self, pipe, source: AdapterSource, name: str | None = None, hotswap: bool = False) -> None:
        """`load_lora_weights` from the adapter's state dict in memory (diffusers copies the dict it is given)."""
        pipe.load_lora_weights(self.state_dicts[source.key], adapter_name=name or source.key, hotswap=hotswap)

    def hotswap_pipeline(self, first: AdapterSource):
        """diffusers' hotswap as its docs set it up: enable_lora_hotswap(target_rank) before the first load, the
        first adapter loaded under the name every later one is swapped into; compiled after that when we are."""
        pipe = self.plain_pipeline()
        pipe.enable_lora_hotswap(target_rank=self.max_rank())
        self.load_plain(pipe, first, name=HOTSWAP_NAME)
        if self.compile:
            self.family.denoiser(pipe).compile()
        return pipe

    def max_rank(self) -> int:
        return max(value.shape[1] for state in self.state_dicts.values()
                   for key, value in state.items() if "lora_B" in key and value.ndim > 1)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def plain_render(self, pipe, steps: int | None = None):
        s = self.sampling
        kwargs = {} if self.family.spec.base == "flux" else {"negative_prompt": None}
        with torch.inference_mode():
            image = pipe(prompt=s.prompt, num_inference_steps=steps or s.steps, guidance_scale=s.guidance,
                         height=s.height, width=s.width, generator=torch.Generator("cpu").manual_seed(s.seed),
                         **kwargs).images[0]
        self.sync()
        return image


def phase(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed_cpu(call) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds): on a shared machine a sub-millisecond switch is often preempted,
    which inflates its wall time but not its CPU time (the CPU runs use one torch thread, so that is all of it)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    call()
    return time.perf_counter() - wall, time.thread_time() - cpu


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 3)


def switch_figures(wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict:
    return {"wall_ms": {name: ms(values) for name, values in wall.items()},
            "cpu_ms": {name: ms(values) for name, values in cpu.items()}}
