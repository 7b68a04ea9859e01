"""The GPU proof: real-size SD 1.5, SDXL and FLUX on one CUDA GPU capped at 12 GB, and SD 1.5 selfies to first image.

    scripts/gpu-proof [--dry-run] [--out FILE]          # installs the CUDA set, then one command per part
    python -m bench.gpu_proof --part sd15|sdxl|flux|selfies --out FILE [--dry-run]

Each part adds its figures to one JSON file (the README's GPU table is built from it):
- sd15, sdxl, flux: bench.realsize's `run_family` (the product's train_adapter, export, GenerationServer) at the
  family's default settings (resolution, fp16/bf16, gradient checkpointing, 8-bit AdamW, NF4 for FLUX) with
  STEPS training steps and CLASS_IMAGES class images: peak VRAM while training (goals 6 / 12 / 10 GB), seconds
  per step, then serving: seconds per image for a warm request, a cold adapter load, and a switch between two
  cached adapters, each with the serving engineer's torch.compile switch off and on.
- selfies: the console (the same services and worker as the Discord bot) trains a subject from 5 photos at
  default settings (class images, 500 steps, evaluation) and renders the first /imagine picture; the wall time
  from the queued job to the written picture (goal 10 minutes).
Usable GPU memory is capped at CAP_GB with torch.cuda.set_per_process_memory_fraction, standing in for a 12 GB card.
--dry-run: the tiny models on CPU, a few steps, through exactly the same functions (a test runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.realsize import FamilyPlan, prepare_models_dir, render_sampling, run_family, serving_settings
from bot.__main__ import main as likeness_main
from storage.settings import Settings

CAP_GB = 12.0
STEPS = 12
CLASS_IMAGES = 2
SERVING_REPEATS = 3
RESOLUTION = {"sd15": 512, "sdxl": 1024, "flux": 512}
VRAM_GOALS_GB = {"sd15": 6.0, "sdxl": 12.0, "flux": 10.0}
SELFIES_GOAL_S = 600.0
PARTS = ("sd15", "sdxl", "flux", "selfies")
IMAGINE_PROMPT = "a photo of rraj person as a Van Gogh painting"


def cap_gpu_memory(cap_gb: float = CAP_GB) -> dict:
    """Limit this process to cap_gb of the GPU, as on our users' 12 GB cards."""
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(1.0, cap_gb * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(fraction)
    return {"device": torch.cuda.get_device_name(0), "total_gb": round(total / 2**30, 1), "cap_gb": cap_gb}


def family_plan(base: str, dry_run: bool, models_dir: Path) -> FamilyPlan:
    if dry_run:  # tiny models on CPU: the same functions, a few steps
        return FamilyPlan(f"tiny-{base}", None, 64, steps=3, class_images=1, inference_steps=2, device="cpu",
                          models_dir=models_dir)
    from trainer.families.published import build_published_model

    model_path = build_published_model(base, models_dir / "published")
    return FamilyPlan(base, str(model_path), RESOLUTION[base], steps=STEPS, class_images=CLASS_IMAGES,
                      inference_steps=None, device="cuda")


def family_part(base: str, dry_run: bool, models_dir: Path, work: Path) -> dict:
    started = time.perf_counter()
    plan = family_plan(base, dry_run, models_dir)
    report = run_family(plan, work)
    report["build_and_run_s"] = round(time.perf_counter() - started, 1)
    report["goal_vram_gb"] = VRAM_GOALS_GB[base]
    peak = report.get("peak_vram_train_gb")
    report["within_vram_goal"] = None if peak is None else peak <= VRAM_GOALS_GB[base]
    if report.get("passed"):
        report["serving"] = {mode: measure_serving(plan, Path(report["adapter_path"]), work / f"serve-{mode}", mode)
                             for mode in compile_modes(dry_run)}
    return report


def compile_modes(dry_run: bool) -> tuple[str, ...]:
    """torch.compile of the served denoiser off and on, where the settings offer the switch. The dry run leaves
    it off: compiling on a shared CPU takes many minutes, and the mode is only a setting passed through."""
    if "serving_compile" not in Settings.model_fields:
        return ("default",)
    return ("off",) if dry_run else ("off", "on")


def measure_serving(plan: FamilyPlan, adapter_path: Path, work: Path, compile_mode: str) -> dict:
    """Warm requests, a cold adapter load, and switches between two cached adapters, on a fresh server."""
    import torch

    from trainer.serving.adapter_cache import AdapterSource
    from trainer.serving.server import GenerationServer

    overrides = {} if compile_mode == "default" else {"serving_compile": compile_mode}
    prepare_models_dir(plan, work)
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
            "switch_request_s": round(switch_s, 3), "switch_cost_ratio": round(switch_s / warm_s, 3)}


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


def selfies_part(dry_run: bool, models_dir: Path, work: Path) -> dict:
    """Queue training with 5 photos at default settings through the console, then /imagine; time it."""
    from trainer.families.published import build_published_model

    family = "tiny-sd15" if dry_run else "sd15"
    env = {"LIKENESS_DATA_DIR": str(work / "data"), "LIKENESS_MODEL_FAMILY": family,
           "LIKENESS_DEVICE": "cpu" if dry_run else "cuda"}
    if dry_run:
        (work / "data").mkdir(parents=True, exist_ok=True)
        (work / "data" / "models").symlink_to(models_dir.resolve(), target_is_directory=True)
    else:
        env["LIKENESS_MODEL_PATH"] = str(build_published_model("sd15", models_dir / "published"))
    photos = write_selfies(work / "selfies")
    script = work / "selfies.txt"
    script.write_text(f"train {' '.join(map(str, photos))} --trigger rraj --class person --name Raj\n"
                      f'imagine "{IMAGINE_PROMPT}" --seed 7\n', encoding="utf-8")
    lines = TimedLines(sys.stderr)
    started = time.perf_counter()
    with _environment(env), contextlib.redirect_stdout(lines):
        code = likeness_main(["console", "--model", family, "--worker", "thread", "--script", str(script),
                              "--out", str(work / "out")])
    finished = time.perf_counter()
    queued, picture = lines.first(r"queued as job"), lines.first(r"\.png")
    report = {"family": family, "photos": len(photos), "exit_code": code, "console_s": round(finished - started, 1),
              "pictures": sorted(p.name for p in (work / "out").glob("*.png")) if (work / "out").is_dir() else [],
              "goal_s": SELFIES_GOAL_S}
    if queued is not None and picture is not None:
        report["selfies_to_first_image_s"] = round(picture - queued, 1)
        report["within_goal"] = None if dry_run else picture - queued <= SELFIES_GOAL_S
    report["passed"] = code == 0 and bool(report["pictures"]) and "selfies_to_first_image_s" in report
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


# --------------------------------------------------------------------------- the JSON file


def record(out: Path, part: str, result: dict, machine: dict) -> None:
    """Add one part's figures to the proof file (written whole to a temp file, then renamed)."""
    proof = json.loads(out.read_text()) if out.is_file() else {"benchmark": "gpu_proof", "parts": {}}
    proof.update(machine)
    proof["parts"][part] = result
    families = [proof["parts"][name] for name in ("sd15", "sdxl", "flux") if name in proof["parts"]]
    proof["families_passed"] = sum(bool(r.get("passed")) for r in families)
    proof["goals_met"] = {name: r.get("within_vram_goal", r.get("within_goal"))
                          for name, r in proof["parts"].items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp")
    temp.write_text(json.dumps(proof, indent=2))
    os.replace(temp, out)


def run_part(part: str, dry_run: bool, models_dir: Path) -> tuple[dict, dict]:
    machine = {"dry_run": dry_run, "cap_gb": None if dry_run else CAP_GB}
    if not dry_run:
        machine.update(cap_gpu_memory())
    with tempfile.TemporaryDirectory(prefix=f"likeness-gpu-proof-{part}-") as temp:
        try:
            if part == "selfies":
                result = selfies_part(dry_run, models_dir, Path(temp))
            else:
                result = family_part(part, dry_run, models_dir, Path(temp))
        except Exception as error:  # record the failure in the file, so a rerun knows what to fix
            result = {"passed": False, "error": f"{type(error).__name__}: {error}"}
    return result, machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=PARTS, required=True)
    parser.add_argument("--out", type=Path, default=Path("out/gpu-proof.json"))
    parser.add_argument("--models-dir", type=Path, default=Path("data/models"),
                        help="tiny models here, real-size random-weight models under published/")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on CPU through the same code")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # Replaced when the part ends; stays if it is killed (the script's timeout) or crashes the interpreter.
    record(args.out, args.part, {"passed": False, "error": "did not finish (timed out or killed)"}, {})
    result, machine = run_part(args.part, args.dry_run, args.models_dir)
    record(args.out, args.part, result, machine)
    print(json.dumps({"part": args.part, "passed": result.get("passed")}))
    return 0 if result.get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
