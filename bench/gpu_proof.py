"""The GPU proof: every headline figure of a 12 GB card, measured in one sitting on one CUDA GPU.

    scripts/gpu-proof --carry ARCHIVE --out DIR      # the prepared offline host (scripts/gpu-carry builds ARCHIVE)
    python -m bench.gpu_proof --out DIR [--parts sd15 selfies] [--sequential] [--dry-run]
    python -m bench.gpu_proof --summarize DIR        # the summary again, from the parts' files

Parts (PARTS, in this order): sd15, selfies, sdxl, flux; each is its own process that caps its GPU memory at
CAP_GB (torch.cuda.set_per_process_memory_fraction, a 12 GB card) and writes DIR/<part>.json when it ends, its
output going to DIR/<part>.log as it runs. On CUDA the parts run side by side (all at once: 4 x 12 GB fit an
H100/H200, and one after the other they would not fit the sitting); speed figures are then taken side by side
and the summary says so. Every part stops at the sitting's deadline (DEADLINE_S); one killed loses only itself.
- sd15, sdxl, flux: bench.realsize's run_family (the product's train_adapter, export, GenerationServer) at the
  family's defaults (512 / 1024 / 512 px; fp16, bf16 and NF4 QLoRA for FLUX at its full depth) with STEPS steps
  and CLASS_IMAGES class images; VRAM while training as allocated, reserved and NVML process memory (goals
  6 / 12 / 10 GB on the largest); serving with compile off and on.
- selfies: the console (the bot's services and worker) trains SD 1.5 from 5 photos at its defaults (100 class
  images, 500 steps, evaluation), then imagine: seconds from the queued job to the picture (goal 10 minutes).
Real-size weights are random, made on the GPU while the product loads them (bench/weightless.py).
--dry-run: the tiny models on CPU through the same code, one part after another, a few steps.

Adding a part: write `def my_part(context: PartContext) -> dict` (with a `failures` count), then
`register(Part("my_part", my_part, goals))`; `--parts` and the summary pick it up.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.goals import Goal, finish, missed_goals
from bench.gpu_proof_parts import PartContext, family_part, selfies_part

CAP_GB = 12.0
DEADLINE_S = 540.0  # the whole sitting on a GPU: 9 minutes
DRY_RUN_DEADLINE_S = 3600.0  # the tiny models on a small shared CPU
SELFIES_GOAL_S = 600.0
VRAM_GOALS_GB = {"sd15": 6.0, "sdxl": 12.0, "flux": 10.0}


@dataclass(frozen=True)
class Part:
    name: str
    run: Callable[[PartContext], dict]
    goals: Callable[[bool], list[Goal]]  # dry_run -> the goals judged on this part's report
    summary: str = ""


PARTS: dict[str, Part] = {}


def register(part: Part) -> None:
    PARTS[part.name] = part


def _family_goals(base: str) -> Callable[[bool], list[Goal]]:
    def goals(dry_run: bool) -> list[Goal]:
        every_stage = [Goal("failures", "==", 0)]
        return every_stage if dry_run else every_stage + [Goal("vram_train.largest_gb", "<=", VRAM_GOALS_GB[base])]
    return goals


def _selfies_goals(dry_run: bool) -> list[Goal]:
    every_step = [Goal("failures", "==", 0)]
    return every_step if dry_run else every_step + [Goal("selfies_to_first_image_s", "<=", SELFIES_GOAL_S)]


register(Part("sd15", lambda context: family_part("sd15", context), _family_goals("sd15"), "SD 1.5 at 512 px"))
register(Part("selfies", selfies_part, _selfies_goals, "5 selfies to the first picture, console, SD 1.5 defaults"))
register(Part("sdxl", lambda context: family_part("sdxl", context), _family_goals("sdxl"), "SDXL at 1024 px"))
register(Part("flux", lambda context: family_part("flux", context), _family_goals("flux"), "FLUX.1-dev, NF4"))


# --------------------------------------------------------------------------- one part, in its own process


def cap_gpu_memory(cap_gb: float = CAP_GB) -> dict:
    """Limit this process to cap_gb of the GPU, as on our users' 12 GB cards."""
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * 2**30 / total))
    return {"device": torch.cuda.get_device_name(0), "total_gb": round(total / 2**30, 1), "cap_gb": cap_gb,
            "torch": torch.__version__, "cuda": torch.version.cuda}


def library_versions() -> dict[str, str | None]:
    from importlib import metadata

    found = {}
    for name in ("torch", "diffusers", "transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def write_json(path: Path, report: dict) -> None:
    """Whole or not at all: a temp file, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(temp, path)


def run_part(name: str, out: Path, models_dir: Path, dry_run: bool, beside: list[str]) -> int:
    """Run one part here; write out/<name>.json (goals judged) and return the exit status."""
    part = PARTS[name]
    report = {"part": name, "dry_run": dry_run, "ran_side_by_side_with": beside, "libraries": library_versions()}
    started = time.perf_counter()
    try:
        if not dry_run:
            report["machine"] = cap_gpu_memory()
        with tempfile.TemporaryDirectory(prefix=f"likeness-gpu-proof-{name}-") as temp:
            report.update(part.run(PartContext(dry_run, models_dir, Path(temp))))
    except Exception as error:  # recorded in the file, so the next sitting knows what to fix
        import traceback

        report.update(failures=report.get("failures", 1) or 1, error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc(limit=-8))
    report["part_s"] = round(time.perf_counter() - started, 1)
    report["goals"] = [str(goal) for goal in part.goals(dry_run)]
    report["goals_missed"] = missed_goals(report, part.goals(dry_run))
    write_json(out / f"{name}.json", report)
    print(json.dumps({"part": name, "failures": report.get("failures"), "goals_missed": report["goals_missed"]}))
    return 1 if report["goals_missed"] else 0


# --------------------------------------------------------------------------- the sitting


def placeholder(name: str, beside: list[str]) -> dict:
    return {"part": name, "failures": None, "error": "did not finish (timed out or killed)",
            "ran_side_by_side_with": beside}


def start_part(name: str, args, beside: list[str], logs: Path) -> subprocess.Popen:
    command = [os.environ.get("LIKENESS_PROOF_PYTHON", sys.executable), "-m", "bench.gpu_proof", "--part", name,
               "--out", str(args.out), "--models-dir", str(args.models_dir), "--beside", ",".join(beside)]
    if args.dry_run:
        command.append("--dry-run")
    write_json(args.out / f"{name}.json", placeholder(name, beside))  # replaced when the part ends
    log = open(logs / f"{name}.log", "w", buffering=1)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.close()
    return process


def wait_all(processes: dict[str, subprocess.Popen], deadline: float) -> dict[str, int | None]:
    """Each part's exit status; a part still running at the deadline is killed (None)."""
    codes: dict[str, int | None] = {}
    for name, process in processes.items():
        try:
            codes[name] = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
            codes[name] = None
            print(f"gpu-proof: {name} stopped at the deadline", file=sys.stderr)
    return codes


def sitting(args) -> int:
    names = args.parts or list(PARTS)
    side_by_side = not args.dry_run and not args.sequential
    logs = args.logs or args.out
    args.out.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    deadline = started + args.deadline_s
    codes = {}
    if side_by_side:
        processes = {name: start_part(name, args, [n for n in names if n != name], logs) for name in names}
        codes = wait_all(processes, deadline)
    else:
        for name in names:
            codes.update(wait_all({name: start_part(name, args, [], logs)}, deadline))
    return summarize(args.out, names, as_json=True, extra={
        "side_by_side": side_by_side, "wall_s": round(time.monotonic() - started, 1),
        "deadline_s": args.deadline_s, "exit_codes": codes})


def summarize(out: Path, names: list[str] | None = None, *, as_json: bool, extra: dict | None = None) -> int:
    """All parts' reports in one, every part's goals judged again under parts.<name>; the exit status."""
    names = names or [name for name in PARTS if (out / f"{name}.json").is_file()]
    reports = {}
    for name in names:
        path = out / f"{name}.json"
        reports[name] = json.loads(path.read_text()) if path.is_file() else placeholder(name, [])
    dry_run = any(report.get("dry_run") for report in reports.values())
    goals = [Goal(f"parts.{name}.{goal.figure}", goal.op, goal.target)
             for name in names for goal in PARTS[name].goals(dry_run)]
    summary = {"benchmark": "gpu_proof", "dry_run": dry_run, "cap_gb": None if dry_run else CAP_GB, **(extra or {}),
               "parts": reports}
    return finish(summary, goals, as_json=as_json)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/gpu-proof"), help="each part's JSON (and log)")
    parser.add_argument("--logs", type=Path, help="the parts' logs elsewhere (default: --out)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), help="default: every part, in order")
    parser.add_argument("--models-dir", type=Path, default=Path("data/models"), help="where tiny models are built")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on CPU through the same code")
    parser.add_argument("--sequential", action="store_true", help="one part at a time (clean speed figures)")
    parser.add_argument("--deadline-s", type=float, help=f"the whole sitting's limit (default {DEADLINE_S:.0f} s; "
                                                          f"dry run {DRY_RUN_DEADLINE_S:.0f} s)")
    parser.add_argument("--summarize", type=Path, metavar="DIR", help="print the summary of DIR's parts")
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)  # internal: one part, here
    parser.add_argument("--beside", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.summarize:
        return summarize(args.summarize, as_json=True)
    if args.deadline_s is None:
        args.deadline_s = DRY_RUN_DEADLINE_S if args.dry_run else DEADLINE_S
    if args.part:
        return run_part(args.part, args.out, args.models_dir, args.dry_run, list(filter(None, args.beside.split(","))))
    return sitting(args)


if __name__ == "__main__":
    sys.exit(main())
