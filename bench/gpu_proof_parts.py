"""The GPU proof's parts: what each measures, on CUDA at real size or (dry run) on the tiny models on CPU.

Each part is a function (PartContext) -> report dict, registered in bench.gpu_proof.PARTS with its goals. Every
report has `failures` (the stages or checks that went wrong; 0 when all passed) so a goal can require it to be 0.
Real-size models are written weightless (bench/weightless.py) and get random weights while the product loads
them; the dry run writes the tiny models the same way, so the same loading path runs in the test.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.realsize import FamilyPlan, prepare_models_dir, render_sampling, run_family, serving_settings
from storage.settings import Settings

STEPS = 12
CLASS_IMAGES = 2
SERVING_REPEATS = 3
RESOLUTION = {"sd15": 512, "sdxl": 1024, "flux": 512}
IMAGINE_PROMPT = "a photo of rraj person as a Van Gogh painting"
FAMILY_STAGES = ("train", "export", "load", "render")


@dataclass(frozen=True)
class PartContext:
    dry_run: bool
    models_dir: Path  # the tiny models (dry run)
    work: Path  # a scratch folder of this part's own

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"


# --------------------------------------------------------------------------- models


def weightless_model(base: str, context: PartContext) -> tuple[str, Path]:
    """(family name, models folder) for `base`: the published architecture on CUDA, the tiny one in a dry run;
    either written weightless, so its weights are made while the product loads it."""
    from bench.weightless import write_weightless

    folder = context.work / "weightless"  # this part's own: parts running side by side share nothing
    if context.dry_run:
        import torch

        from trainer.families import get_family
        from trainer.tiny import ensure_tiny_model

        name = f"tiny-{base}"
        tiny = ensure_tiny_model(name, context.models_dir)
        if not (folder / name).is_dir():
            write_weightless(get_family(name).load_pipeline(str(tiny), "cpu", torch.float32), folder / name)
            for extra in tiny.iterdir():  # the tiny builder's own marks (its build stamp)
                if extra.is_file() and not (folder / name / extra.name).exists():
                    shutil.copyfile(extra, folder / name / extra.name)
        return name, folder
    from trainer.families.published import published_pipeline_on_meta

    if not (folder / base / "model_index.json").is_file():
        write_weightless(published_pipeline_on_meta(base), folder / base)
    return base, folder


def family_plan(base: str, context: PartContext) -> FamilyPlan:
    name, folder = weightless_model(base, context)
    if context.dry_run:  # tiny models on CPU: the same functions, a few steps
        return FamilyPlan(name, None, 64, steps=3, class_images=1, inference_steps=2, device="cpu",
                          models_dir=folder)
    return FamilyPlan(base, str(folder / base), RESOLUTION[base], steps=STEPS, class_images=CLASS_IMAGES,
                      inference_steps=None, device="cuda")


# --------------------------------------------------------------------------- sd15, sdxl, flux


def family_part(base: str, context: PartContext) -> dict:
    """bench.realsize's run_family at the family's defaults, then serving with compile off and on."""
    from bench.weightless import random_weights_on_load

    started = time.perf_counter()
    with random_weights_on_load():
        plan = family_plan(base, context)
        report = run_family(plan, context.work)
        report["build_and_run_s"] = round(time.perf_counter() - started, 1)
        if report.get("passed"):
            report["serving"] = {mode: _serving_or_failure(plan, Path(report["adapter_path"]), context, mode)
                                 for mode in compile_modes(context.dry_run)}
    stages_failed = sum(report["stages"].get(stage) != "pass" for stage in FAMILY_STAGES)
    serving_failed = sum("error" in figures for figures in report.get("serving", {}).values())
    report["failures"] = stages_failed + serving_failed
    return report


def compile_modes(dry_run: bool) -> tuple[str, ...]:
    """torch.compile of the served denoiser off and on. The dry run leaves it off: compiling on a shared CPU
    takes many minutes, and the mode is only a setting passed through."""
    if "serving_compile" not in Settings.model_fields:
        return ("default",)
    return ("off",) if dry_run else ("off", "on")


def _serving_or_failure(plan: FamilyPlan, adapter_path: Path, context: PartContext, mode: str) -> dict:
    try:
        return measure_serving(plan, adapter_path, context.work / f"serve-{mode}", mode)
    except Exception as error:  # one mode failing (compile) must not lose the other's figures
        return {"compile": mode, "error": f"{type(error).__name__}: {str(error)[:500]}"}


def measure_serving(plan: FamilyPlan, adapter_path: Path, work: Path, compile_mode: str) -> dict:
    """Warm requests, a cold adapter load, and switches between two cached adapters, on a fresh server."""
    import torch

    from bench.vram import VramWatch
    from trainer.serving.adapter_cache import AdapterSource
    from trainer.serving.server import GenerationServer

    overrides = {} if compile_mode == "default" else {"serving_compile": compile_mode}
    prepare_models_dir(plan, work)
    with VramWatch(plan.device) as watch:
        server = GenerationServer(serving_settings(plan, work, **overrides), device=plan.device)
        first = AdapterSource("first", adapter_path, adapter_id=1)
        second = AdapterSource("second", _second_adapter(adapter_path, work / "second"), adapter_id=2)
        runtime = server.runtime()
        sampling = render_sampling(plan, runtime.family)

        def request(source) -> float:
            started = time.perf_counter()
            runtime.use_adapters([(source, 1.0)])
            runtime.text2img(sampling)
            if plan.device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - started

        first_request = request(first)  # includes compilation when it is on
        warm = [request(first) for _ in range(SERVING_REPEATS)]
        cold_load = request(second)
        switches = [request(source) for _ in range(SERVING_REPEATS) for source in (first, second)]
        server.close()
    warm_s, switch_s = statistics.mean(warm), statistics.mean(switches)
    return {"compile": compile_mode, "steps": sampling.steps, "first_request_s": round(first_request, 3),
            "s_per_image": round(warm_s, 3), "cold_adapter_request_s": round(cold_load, 3),
            "switch_request_s": round(switch_s, 3), "switch_cost_ratio": round(switch_s / warm_s, 3),
            "vram": watch.figures()}


def _second_adapter(adapter_path: Path, folder: Path) -> Path:
    """Another user's adapter: the same layout with other weights (the first one's, halved)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(adapter_path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) * 0.5 for key in handle.keys()}
        metadata = handle.metadata()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / adapter_path.name), metadata=metadata)
    return folder / adapter_path.name


# --------------------------------------------------------------------------- selfies to first image


def write_selfies(folder: Path) -> list[Path]:
    """Five face photos (scikit-image's astronaut and cameraman, cropped, mirrored and relit), upscaled so each
    face is over 256 px wide, as SD 1.5's photo checks require."""
    from PIL import Image, ImageEnhance, ImageOps
    from skimage import data as skdata

    astronaut = Image.fromarray(skdata.astronaut())
    camera = Image.fromarray(skdata.camera()).convert("RGB")
    variants = [(astronaut, (0, 0, 512, 512), False, 1.0), (astronaut, (0, 0, 512, 512), True, 1.0),
                (astronaut, (60, 0, 460, 400), False, 1.15), (camera, (80, 0, 480, 400), False, 1.05),
                (camera, (100, 0, 500, 400), True, 0.9)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (image, box, mirror, light) in enumerate(variants, start=1):
        picture = ImageEnhance.Brightness(image.crop(box)).enhance(light)
        picture = ImageOps.mirror(picture) if mirror else picture
        picture = picture.resize((picture.width * 3, picture.height * 3), Image.Resampling.LANCZOS)
        paths.append(folder / f"selfie-{index}.jpg")
        picture.save(paths[-1], format="JPEG", quality=92)
    return paths


class TimedLines(io.TextIOBase):
    """A stdout that remembers when each line was written (the console prints as jobs progress)."""

    def __init__(self, echo):
        self.lines: list[tuple[float, str]] = []
        self.echo = echo
        self._partial = ""

    def write(self, text: str) -> int:
        self.echo.write(text)
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        now = time.perf_counter()
        self.lines += [(now, line) for line in complete]
        return len(text)

    def first(self, pattern: str) -> float | None:
        return next((stamp for stamp, line in self.lines if re.search(pattern, line)), None)


def selfies_part(context: PartContext) -> dict:
    """Queue training with 5 photos at default settings through the console, then imagine; time it."""
    from bench.weightless import random_weights_on_load
    from bot.__main__ import main as likeness_main

    with random_weights_on_load():
        family, folder = weightless_model("sd15", context)
        data = context.work / "data"
        env = {"LIKENESS_DATA_DIR": str(data), "LIKENESS_MODEL_FAMILY": family, "LIKENESS_DEVICE": context.device}
        data.mkdir(parents=True, exist_ok=True)
        if context.dry_run:  # the tiny loader finds its (weightless) model under data/models
            (data / "models").symlink_to(folder.resolve(), target_is_directory=True)
        else:
            env["LIKENESS_MODEL_PATH"] = str(folder / family)
        photos = write_selfies(context.work / "selfies")
        script = context.work / "selfies.txt"
        script.write_text(f"train {' '.join(map(str, photos))} --trigger rraj --class person --name Raj\n"
                          f'imagine "{IMAGINE_PROMPT}" --seed 7\n', encoding="utf-8")
        lines = TimedLines(sys.stderr)
        started = time.perf_counter()
        with _environment(env), contextlib.redirect_stdout(lines):
            code = likeness_main(["console", "--model", family, "--worker", "thread", "--script", str(script),
                                  "--out", str(context.work / "out")])
        finished = time.perf_counter()
    out = context.work / "out"
    queued, picture = lines.first(r"queued as job"), lines.first(r"\.png")
    report = {"family": family, "photos": len(photos), "exit_code": code, "console_s": round(finished - started, 1),
              "pictures": sorted(p.name for p in out.glob("*.png")) if out.is_dir() else []}
    if queued is not None and picture is not None:
        report["selfies_to_first_image_s"] = round(picture - queued, 1)
    report["failures"] = (code != 0) + (not report["pictures"]) + ("selfies_to_first_image_s" not in report)
    report["console_tail"] = [line for _, line in lines.lines[-8:]]
    return report


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
