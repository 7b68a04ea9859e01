"""Real size on CPU: the product's own training and serving code on the published SD 1.5, SDXL and FLUX.

    python -m bench.realsize --json [--families sd15 sdxl flux] [--models-dir data/models/published]

Each family runs in its own subprocess, one after the other (so peak RSS is that family's alone and a 24 GB
machine holds the largest): its published architecture with random weights is built once
(trainer/families/published.py), then
- train: `train_adapter` at the family's default settings except the step count: 2 steps, prior preservation
  with 1 class image that the trainer renders itself at 2 inference steps;
- export: the adapter files the trainer wrote (diffusers, plus kohya for SD 1.5 and SDXL);
- load: a fresh `GenerationServer` loads the base model and the adapter through `use_adapters`;
- render: one picture at the training resolution, 2 inference steps.
sd15 at 512 px, sdxl at 256 px (the fp32 UNet and text encoders on CPU take most of 24 GB), flux at 512 px with
the real widths but REDUCED_FLUX_DEPTH blocks, at its default NF4 (QLoRA) settings for training and serving
(see `nf4_on_cpu`).
Reported per family: pass/fail per stage, peak RSS, seconds per training step, parameter counts; on CUDA also
VRAM while training and while serving as `vram_train` / `vram_serve` (bench/vram.py: max_memory_allocated,
max_memory_reserved and NVML's figure for the process, judged on the largest).
Goals (bench/goals.py; the exit status is 1 when one is missed, and a figure that was not measured is a miss):
`families_passed` equals the families run; on CUDA (`--device cuda`) each family's `vram_train.largest_gb` is at
most VRAM_GOALS_GB (a 12 GB card: SD 1.5 6 GB, SDXL 12 GB, FLUX NF4 10 GB).

`run_family` is also the GPU proof's per-family code (bench/gpu_proof.py), with other steps and on CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from bench.goals import Goal, finish
from bench.vram import VramWatch
from storage.settings import Settings

# torch, diffusers and the trainer are imported inside functions: the parent process only starts the families'
# processes and stays small.
FAMILIES = ("sd15", "sdxl", "flux")
CPU_RESOLUTION = {"sd15": 512, "sdxl": 256, "flux": 512}
PROMPT = "a photo of rraj person as a Van Gogh painting"
VRAM_GOALS_GB = {"sd15": 6.0, "sdxl": 12.0, "flux": 10.0}  # what a 12 GB card leaves each family
FAMILY_TIMEOUT_S = 3 * 3600  # per family: sd15 alone took 92 min on our shared, heavily loaded 2-core machine


@dataclass(frozen=True)
class FamilyPlan:
    """What one family run does; the CPU bench and the GPU proof differ only in these values."""

    family: str  # sd15, sdxl, flux (or tiny-* for the GPU proof's dry run)
    model_path: str | None  # the built model folder; None for tiny models
    resolution: int
    steps: int = 2
    class_images: int = 1
    inference_steps: int | None = 2  # class images and renders; None: the family's default
    quantize_base: str = "default"  # "default" (the family's), "nf4" or "none"
    device: str = "cpu"
    models_dir: Path | None = None  # where tiny models are kept between runs


class StepTimes:
    """Trainer hooks that time each optimizer step (from should_stop() to its progress report) and the
    class-image stage (from its progress message to the next one)."""

    def __init__(self):
        self.steps: list[float] = []
        self.stages: dict[str, float] = {}
        self._step_started: float | None = None
        self._stage: tuple[str, float] | None = None

    def should_stop(self):
        self._step_started = time.perf_counter()
        return None

    def progress(self, p) -> None:
        now = time.perf_counter()
        if p.message.startswith("Training step") and self._step_started is not None:
            self.steps.append(now - self._step_started)
            return
        if self._stage is not None:
            name, started = self._stage
            self.stages[name] = self.stages.get(name, 0.0) + now - started
        self._stage = (p.message.split(":")[0], now)

    def preview(self, step, images) -> None:
        pass

    def between_steps(self) -> None:
        pass


@contextlib.contextmanager
def inference_steps_for(family_name: str, steps: int | None):
    """Class images and previews at `steps` inference steps: the family's published default is 28-30, which a
    CPU cannot afford at real size. Only this number changes; everything else stays the family's default."""
    from intake.family_specs import SPECS

    if steps is None:
        yield
        return
    original = SPECS[family_name]
    SPECS[family_name] = dataclasses.replace(
        original, defaults=dataclasses.replace(original.defaults, inference_steps=steps))
    try:
        yield
    finally:
        SPECS[family_name] = original


def _stage(report: dict, name: str, action):
    """Run one stage; record pass/fail (with the error's last line) and its seconds. Returns its value or None."""
    started = time.perf_counter()
    try:
        value = action()
    except Exception as error:  # a failing stage is the finding: report it and go on
        last_line = (str(error).strip().splitlines() or [""])[-1]
        report["stages"][name] = f"fail: {type(error).__name__}: {last_line}"
        report["errors"][name] = traceback.format_exc(limit=-6)
        return None
    report["stages"][name] = "pass"
    report["seconds"][name] = round(time.perf_counter() - started, 2)
    return value


def run_family(plan: FamilyPlan, work: Path) -> dict:
    """Train, export, load back and render one family through the product's code; a dict of findings."""
    from bench.train import write_bench_photos
    from trainer.training.config import PhotoSpec, SubjectSpec, TrainConfig
    from trainer.training.run import train_adapter

    report = {"family": plan.family, "device": plan.device, "resolution": plan.resolution, "steps": plan.steps,
              "class_images": plan.class_images, "inference_steps": plan.inference_steps,
              "stages": {}, "seconds": {}, "errors": {}}
    photos = write_bench_photos(work / "photos")
    models_dir = prepare_models_dir(plan, work)
    subjects = [SubjectSpec(trigger="rraj", class_noun="person", photos=[PhotoSpec(crop_path=p) for p in photos])]
    overrides = {} if plan.quantize_base == "default" else {"quantize_base": plan.quantize_base}
    config = TrainConfig.for_family(
        plan.family, model_path=plan.model_path, models_dir=models_dir, output_dir=work / "adapter",
        checkpoint_dir=work / "checkpoints", class_cache_dir=work / "classes", subjects=subjects,
        resolution=plan.resolution, steps=plan.steps, num_class_images=plan.class_images, preview_every=0,
        checkpoint_every=0, device=plan.device, **overrides)
    report["quantize_base"], report["mixed_precision"] = config.quantize_base, config.mixed_precision
    hooks = StepTimes()
    with inference_steps_for(plan.family, plan.inference_steps), VramWatch(plan.device) as watch:
        result = _stage(report, "train", lambda: train_adapter(config, hooks))
    report["vram_train"] = watch.figures()
    report["peak_vram_train_gb"] = report["vram_train"]["largest_gb"]
    report["step_seconds"] = [round(s, 3) for s in hooks.steps]
    report["s_per_step"] = round(_steady(hooks.steps), 3) if hooks.steps else None
    report["class_images_s"] = round(hooks.stages.get("Preparing class images", 0.0), 2)
    if result is not None:
        report["final_loss"] = result.final_loss
        report["class_images_generated"] = result.class_images_generated
        report["adapter_path"] = str(result.adapter_path)
        _stage(report, "export", lambda: _check_export(plan.family, result, report))
    if report["stages"].get("export") == "pass":
        with VramWatch(plan.device) as watch:
            _stage(report, "load", lambda: _serve(plan, work, result.adapter_path, report))
        report["vram_serve"] = watch.figures()
        report["peak_vram_serve_gb"] = report["vram_serve"]["largest_gb"]
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["passed"] = all(report["stages"].get(s) == "pass" for s in ("train", "export", "load", "render"))
    return report


def _steady(step_times: list[float]) -> float:
    """Seconds per step without the first step (allocator and kernel warm-up) when there is more than one."""
    steady = step_times[1:] or step_times
    return sum(steady) / len(steady)


def prepare_models_dir(plan: FamilyPlan, work: Path) -> Path:
    """The serving settings' models folder (data_dir/models), linked to plan.models_dir when one is given."""
    models_dir = work / "data" / "models"
    models_dir.parent.mkdir(parents=True, exist_ok=True)
    if plan.models_dir is not None and not models_dir.exists():
        Path(plan.models_dir).mkdir(parents=True, exist_ok=True)
        models_dir.symlink_to(Path(plan.models_dir).resolve(), target_is_directory=True)
    return models_dir


def serving_settings(plan: FamilyPlan, work: Path, **overrides):
    """The worker's settings for serving this plan's model from work/data."""
    return Settings(data_dir=work / "data", model_family=plan.family, model_path=plan.model_path,
                    device=plan.device, _env_file=None, **overrides)


def render_sampling(plan: FamilyPlan, family, seed: int = 7):
    from trainer.serving.server import Sampling

    steps = plan.inference_steps or family.defaults.inference_steps
    return Sampling(PROMPT, "", plan.resolution, plan.resolution, steps, family.defaults.guidance_scale, seed)


def _check_export(base: str, result, report: dict) -> None:
    from safetensors import safe_open

    with safe_open(str(result.adapter_path), framework="pt") as handle:
        keys = list(handle.keys())
        report["lora_parameters"] = sum(_numel(handle.get_slice(key).get_shape()) for key in keys)
        report["lora_tensors"] = len(keys)
    if not keys:
        raise AssertionError("the adapter file has no tensors")
    report["kohya_export"] = result.metadata.get("kohya_export")
    if not base.endswith("flux") and result.kohya_path is None:
        raise AssertionError(f"no kohya file for {base}: {result.metadata.get('kohya_export')}")


def _numel(shape) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _serve(plan: FamilyPlan, work: Path, adapter_path: Path, report: dict) -> None:
    """A fresh generation server (the worker's): load the base model and the adapter, then render."""
    from trainer.serving.adapter_cache import AdapterSource
    from trainer.serving.server import GenerationServer

    # Serve in NF4 where the family trained in it (the server's default on CUDA; on CPU it has to be asked).
    settings = serving_settings(plan, work, generation_nf4=report["quantize_base"] == "nf4")
    server = GenerationServer(settings, device=plan.device)
    runtime = server.runtime()
    report["parameters"] = _parameter_counts(runtime.pipe)
    source = AdapterSource("rraj", Path(adapter_path), adapter_id=1)
    runtime.use_adapters([(source, 1.0)])
    report["active_adapters"] = runtime.active_adapters()
    _stage(report, "render", lambda: _render(plan, runtime, work, report))
    server.close()


def _render(plan: FamilyPlan, runtime, work: Path, report: dict) -> None:
    sampling = render_sampling(plan, runtime.family)
    started = time.perf_counter()
    image = runtime.text2img(sampling)
    _synchronize(plan.device)
    report["first_render_s"] = round(time.perf_counter() - started, 2)
    if image.size != (plan.resolution, plan.resolution):
        raise AssertionError(f"rendered {image.size}, asked for {plan.resolution} px")
    image.save(work / "render.png")


def _parameter_counts(pipe) -> dict[str, int]:
    import torch

    return {name: sum(p.numel() for p in module.parameters())
            for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)}


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def nf4_on_cpu():
    """diffusers' bitsandbytes quantizer refuses to load without a GPU, although bitsandbytes 0.50 runs NF4 on
    CPU; lift only that environment check (as tests/trainer/test_training_switches.py does), so FLUX runs its
    real QLoRA path: NF4 transformer and T5, prepare_model_for_kbit_training, peft LoRA on Linear4bit layers."""
    import torch
    from diffusers.quantizers.bitsandbytes.bnb_quantizer import BnB4BitDiffusersQuantizer

    original = BnB4BitDiffusersQuantizer.validate_environment
    if not torch.cuda.is_available():
        BnB4BitDiffusersQuantizer.validate_environment = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        BnB4BitDiffusersQuantizer.validate_environment = original


# --------------------------------------------------------------------------- processes


def run_child(base: str, models_dir: Path, resolution: int, device: str = "cpu") -> dict:
    """One family in this process: build (in a subprocess, so its memory is not counted), then run."""
    from trainer.families.published import build_published_model

    model_path = build_published_model(base, models_dir, reduced=base == "flux")
    with tempfile.TemporaryDirectory(prefix=f"likeness-realsize-{base}-") as temp, nf4_on_cpu():
        return run_family(FamilyPlan(base, str(model_path), resolution, device=device), Path(temp))


def realsize_goals(families: list[str], device: str) -> list[Goal]:
    """Every family passes every stage; on CUDA each also fits its share of a 12 GB card (judged on the largest
    of allocated, reserved and NVML process memory)."""
    goals = [Goal("families_passed", ">=", len(families))]
    if device.startswith("cuda"):
        goals += [Goal(f"families.{base}.vram_train.largest_gb", "<=", VRAM_GOALS_GB[base]) for base in families]
    return goals


def _subprocess_json(args: list[str], timeout_s: float) -> dict:
    command = [sys.executable, "-m", "bench.realsize", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"passed": False, "stages": {"process": f"fail: timed out after {timeout_s:.0f} s"}}
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    if finished.returncode != 0 or not lines:
        tail = finished.stderr.strip().splitlines()[-3:]
        return {"passed": False, "stages": {"process": f"fail: exit {finished.returncode}: {' | '.join(tail)}"}}
    return json.loads(lines[-1])


def build_in_subprocess(base: str, models_dir: Path) -> dict:
    started = time.perf_counter()
    result = _subprocess_json(["--build", base, "--models-dir", str(models_dir)], FAMILY_TIMEOUT_S)
    result["build_s"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--models-dir", type=Path, default=Path("data/models/published"),
                        help="where the random-weight real-size models are built once (default data/models/published)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: on CUDA the VRAM goals apply")
    parser.add_argument("--sdxl-resolution", type=int, default=CPU_RESOLUTION["sdxl"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per family (default 1: on a shared machine more threads spin on "
                             "each other and the timings become noise)")
    parser.add_argument("--one", choices=FAMILIES, help=argparse.SUPPRESS)  # internal: one family, this process
    parser.add_argument("--build", choices=FAMILIES, help=argparse.SUPPRESS)  # internal: build one model
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.build:
        from trainer.families.published import build_published_model

        path = build_published_model(args.build, args.models_dir, reduced=args.build == "flux")
        print(json.dumps({"model_path": str(path)}))
        return 0
    resolutions = dict(CPU_RESOLUTION, sdxl=args.sdxl_resolution)
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_child(args.one, args.models_dir, resolutions[args.one], args.device)))
        return 0
    started = time.perf_counter()
    families = {}
    for base in args.families:
        build = build_in_subprocess(base, args.models_dir)
        if "model_path" not in build:
            families[base] = {**build, "passed": False}
            continue
        report = _subprocess_json(["--one", base, "--models-dir", str(args.models_dir), "--threads", str(args.threads),
                                   "--sdxl-resolution", str(args.sdxl_resolution), "--device", args.device],
                                  FAMILY_TIMEOUT_S)
        families[base] = {**report, "build_s": build["build_s"]}
    summary = {"benchmark": "realsize", "device": args.device, "torch_threads": args.threads, "families": families,
               "families_passed": sum(bool(r.get("passed")) for r in families.values()),
               "families_run": len(families), "total_s": round(time.perf_counter() - started, 1)}
    return finish(summary, realsize_goals(args.families, args.device), as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
