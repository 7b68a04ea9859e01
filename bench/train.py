"""Trainer speed and memory.

    python -m bench.train --json [--quick]

CPU (tiny SD 1.5, 64 px, DreamBooth with prior preservation: one photo + one class image per step):
- overhead_ratio: our trainer's median seconds per step divided by a minimal plain diffusers+peft loop
  written here, on the same model, photos, class images, rank, batch and optimizer. Both run in this
  process in lockstep (one step each, taking turns, after warm-up), so a busy machine slows both alike.
- cache_speedup: trainer step time with latent and text-embedding caching off, divided by with it
  (also measured in lockstep).
- peak_rss_mb: this process's peak resident memory.
Goal: overhead_ratio <= 1.05.

CUDA (when a GPU is present and --cpu is not given): sd15, sdxl and flux are built from their
published architectures with random weights (trainer/families/published.py, nothing downloaded),
then trained at each family's default settings; reports peak VRAM and seconds per step against the
12 GB-card goals (peak_vram_gb <= 6 / 12 / 10 GB), stated only when the CUDA part runs.
The goals are judged by bench/goals.py; the exit status is 1 when one is missed or was not measured.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as skdata

from bench.goals import Goal, finish

from trainer.families import get_family
from trainer.training.class_images import ensure_class_images
from trainer.training.config import PhotoSpec, SubjectSpec, TrainConfig, class_prompt_for
from trainer.training.run import train_adapter

FAMILY = "tiny-sd15"
TARGET_OVERHEAD = 1.05
VRAM_GOALS_GB = {"sd15": 6.0, "sdxl": 12.0, "flux": 10.0}


def write_bench_photos(folder: Path) -> list[Path]:
    """Four face photos from scikit-image (the astronaut and the cameraman, each also mirrored)."""
    folder.mkdir(parents=True, exist_ok=True)
    crops = [Image.fromarray(skdata.astronaut()).crop((140, 20, 340, 220)),
             Image.fromarray(skdata.camera()).convert("RGB").crop((180, 40, 380, 240))]
    paths = []
    for index, crop in enumerate(crops + [c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for c in crops]):
        path = folder / f"face-{index}.png"
        crop.save(path)
        paths.append(path)
    return paths


class Lockstep:
    """Runs two training loops in two threads, strictly taking turns one step at a time.

    Each step of one loop is measured next to a step of the other, under the same machine load,
    so the ratio of their medians holds even on a busy machine. The loops load their models one
    after the other (from_pretrained is not thread-safe), then both start stepping.
    """

    def __init__(self, names: tuple[str, str]):
        self.names = names
        self.turn = names[0]
        self.done: set[str] = set()
        self.ready = threading.Barrier(2)
        self.loading = threading.Lock()
        self.holding: set[str] = set()
        self.condition = threading.Condition()
        self.times: dict[str, list[float]] = {name: [] for name in names}

    def loaded(self, name: str) -> None:
        """Called by a loop once its models are loaded: let the other load, then wait for it."""
        self.holding.discard(name)
        self.loading.release()
        self.ready.wait()

    def start_turn(self, name: str) -> float:
        with self.condition:
            self.condition.wait_for(lambda: self.turn == name or self._other(name) in self.done)
        return time.perf_counter()

    def end_turn(self, name: str, started: float) -> None:
        self.times[name].append(time.perf_counter() - started)

    def pass_turn(self, name: str) -> None:
        with self.condition:
            self.turn = self._other(name)
            self.condition.notify_all()

    def finish(self, name: str) -> None:
        with self.condition:
            self.done.add(name)
            self.turn = self._other(name)
            self.condition.notify_all()

    def _other(self, name: str) -> str:
        return self.names[1] if name == self.names[0] else self.names[0]

    def run(self, loops: dict) -> dict[str, list[float]]:
        errors = []

        def target(name, loop):
            try:
                self.loading.acquire()
                self.holding.add(name)
                loop(self, name)
            except BaseException as error:  # surface it in the main thread
                errors.append(error)
                self.ready.abort()
                if name in self.holding:
                    self.loading.release()
            finally:
                self.finish(name)

        threads = [threading.Thread(target=target, args=item) for item in loops.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return self.times


class LockstepHooks:
    """Trainer hooks: a step runs from should_stop() to progress(); between steps the turn passes."""

    def __init__(self, lockstep: Lockstep, name: str):
        self.lockstep, self.name = lockstep, name
        self.started: float | None = None

    def should_stop(self):
        if self.started is None:
            self.lockstep.loaded(self.name)  # model loading and caching are done
        self.started = self.lockstep.start_turn(self.name)
        return None

    def progress(self, p) -> None:
        if p.message.startswith("Training step"):
            self.lockstep.end_turn(self.name, self.started)

    def preview(self, step, images) -> None:
        pass

    def between_steps(self) -> None:
        self.lockstep.pass_turn(self.name)


def trainer_loop(config: TrainConfig):
    def loop(lockstep: Lockstep, name: str) -> None:
        train_adapter(config, LockstepHooks(lockstep, name))
    return loop


def plain_loop(model_path: str, photos: list[Path], class_images: list[Path], config: TrainConfig):
    """The minimal loop a diffusers user would write: cached latents and embeddings, peft LoRA, AdamW."""

    def loop(lockstep: Lockstep, name: str) -> None:
        from diffusers import DDPMScheduler, StableDiffusionPipeline
        from peft import LoraConfig

        pipe = StableDiffusionPipeline.from_pretrained(model_path, safety_checker=None,
                                                       requires_safety_checker=False)
        unet, scheduler = pipe.unet, DDPMScheduler.from_config(pipe.scheduler.config)
        for module in (unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False)
        torch.manual_seed(config.seed)
        unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian",
                                    target_modules=list(config.target_modules)))
        params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=1e-2)
        with torch.no_grad():
            posteriors = [pipe.vae.encode(_pixels(p, config.resolution)).latent_dist for p in photos + class_images]
            instance_embeds = pipe.encode_prompt("a photo of rraj person", "cpu", 1, False)[0]
            class_embeds = pipe.encode_prompt(class_prompt_for("person"), "cpu", 1, False)[0]
        embeds = torch.cat([instance_embeds, class_embeds])
        lockstep.loaded(name)
        for step in range(config.steps):
            started = lockstep.start_turn(name)
            pair = (posteriors[step % len(photos)], posteriors[len(photos) + step % len(class_images)])
            latents = torch.cat([p.sample() for p in pair]) * pipe.vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (2,))
            prediction = unet(scheduler.add_noise(latents, noise, timesteps), timesteps, embeds).sample
            instance_pred, class_pred = prediction.chunk(2)
            instance_noise, class_noise = noise.chunk(2)
            loss = F.mse_loss(instance_pred, instance_noise) + config.prior_loss_weight * F.mse_loss(
                class_pred, class_noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()  # the scripts log the loss every step too
            lockstep.end_turn(name, started)
            lockstep.pass_turn(name)

    return loop


class StepClock:
    """Hooks that time steps by the gaps between progress reports (for the CUDA runs)."""

    def __init__(self):
        self.stamps: list[float] = []

    def progress(self, p) -> None:
        if p.message.startswith("Training step"):
            self.stamps.append(time.perf_counter())

    def preview(self, step, images) -> None:
        pass

    def should_stop(self):
        return None

    def between_steps(self) -> None:
        pass

    def step_times(self, warmup: int) -> list[float]:
        return list(np.diff(self.stamps))[warmup:]


def _pixels(path: Path, resolution: int) -> torch.Tensor:
    image = Image.open(path).convert("RGB").resize((resolution, resolution), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]


def cpu_benchmark(work: Path, warmup: int, steps: int) -> dict:
    models_dir = work / "models"
    photos = write_bench_photos(work / "photos")
    family = get_family(FAMILY)
    model_path = family.resolve_model_path(None, models_dir)
    subjects = [SubjectSpec(trigger="rraj", class_noun="person", photos=[PhotoSpec(crop_path=p) for p in photos])]

    def config(name: str, **overrides) -> TrainConfig:
        values = dict(models_dir=models_dir, output_dir=work / name / "out", checkpoint_dir=work / name / "ckpt",
                      class_cache_dir=work / "classes", subjects=subjects, steps=warmup + steps,
                      optimizer="adamw", preview_every=0, checkpoint_every=0, batch_size=1, num_class_images=4)
        values.update(overrides)
        return TrainConfig.for_family(FAMILY, **values)

    cached = config("cached")
    class_images, _ = ensure_class_images(family, None, models_dir, cached.class_cache_dir, class_prompt_for("person"),
                                          cached.resolution, cached.num_class_images, cached.seed, "cpu")
    overhead_times = Lockstep(("plain", "trainer")).run({
        "plain": plain_loop(model_path, photos, class_images, cached),
        "trainer": trainer_loop(cached),
    })
    cache_times = Lockstep(("uncached", "cached")).run({
        "uncached": trainer_loop(config("uncached", cache_latents=False, cache_text_embeddings=False)),
        "cached": trainer_loop(config("cached-again")),
    })
    median = {name: statistics.median(times[warmup:])
              for times in (overhead_times, cache_times) for name, times in times.items()}
    return {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "family": FAMILY,
        "resolution": cached.resolution,
        "rank": cached.rank,
        "optimizer": cached.optimizer,
        "batch": {"instance": cached.batch_size, "class": cached.batch_size},
        "photos": len(photos),
        "warmup_steps": warmup,
        "measured_steps": steps,
        "overhead_ratio": round(median["trainer"] / median["plain"], 4),
        "overhead_target": TARGET_OVERHEAD,
        "trainer_s_per_step": round(median["trainer"], 5),
        "plain_s_per_step": round(median["plain"], 5),
        "cache_speedup": round(median["uncached"] / median["cached"], 3),
        "uncached_s_per_step": round(median["uncached"], 5),
        "cached_s_per_step": round(median["cached"], 5),
    }


def cuda_benchmark(work: Path, steps: int) -> dict:
    """Each family in turn; one that fails is recorded with its error (its VRAM goal then counts as missed)."""
    photos = write_bench_photos(work / "photos")
    subjects = [SubjectSpec(trigger="rraj", class_noun="person", photos=[PhotoSpec(crop_path=p) for p in photos])]
    results = {}
    for base in VRAM_GOALS_GB:
        try:
            results[base] = cuda_family(base, work, subjects, steps)
        except Exception as error:  # an out-of-memory or a family that cannot load: reported, not fatal
            results[base] = {"error": f"{type(error).__name__}: {error}", "goal_gb": VRAM_GOALS_GB[base]}
    return {"device": torch.cuda.get_device_name(), "steps": steps, "families": results}


def cuda_family(base: str, work: Path, subjects: list[SubjectSpec], steps: int) -> dict:
    from trainer.families.published import build_published_model

    model_path = build_published_model(base, work / "published")
    config = TrainConfig.for_family(
        base, model_path=str(model_path), models_dir=work / "published", output_dir=work / base / "out",
        checkpoint_dir=work / base / "ckpt", class_cache_dir=work / "classes", subjects=subjects,
        steps=steps, num_class_images=2, preview_every=0, checkpoint_every=0,
    )
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    clock = StepClock()
    train_adapter(config, clock)
    return {
        "resolution": config.resolution,
        "quantize_base": config.quantize_base,
        "mixed_precision": config.mixed_precision,
        "peak_vram_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "goal_gb": VRAM_GOALS_GB[base],
        "s_per_step": round(statistics.median(clock.step_times(2)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (fewer steps, one block pair)")
    parser.add_argument("--cpu", action="store_true", help="skip the CUDA part even when a GPU is present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warmup, steps = (3, 10) if args.quick else (5, 60)
    with tempfile.TemporaryDirectory(prefix="likeness-bench-train-") as temp:
        report = {"cpu": cpu_benchmark(Path(temp), warmup, steps)}
        if torch.cuda.is_available() and not args.cpu:
            report["cuda"] = cuda_benchmark(Path(temp), steps=5 if args.quick else 20)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return judge(report, as_json=args.json)


def goals(report: dict) -> list[Goal]:
    """The overhead goal always; the VRAM goals when the CUDA part ran (a CPU machine cannot state them)."""
    stated = [Goal("overhead_ratio", "<=", TARGET_OVERHEAD)]
    if "cuda" in report:
        stated += [Goal(f"cuda.families.{base}.peak_vram_gb", "<=", gb) for base, gb in VRAM_GOALS_GB.items()]
    return stated


def judge(report: dict, *, as_json: bool) -> int:
    cpu = report.get("cpu") or {}
    for key in ("overhead_ratio", "cache_speedup"):
        if key in cpu:
            report[key] = cpu[key]
    return finish(report, goals(report), as_json=as_json, indent=2)


if __name__ == "__main__":
    sys.exit(main())
