"""Serving adapters: our LoRA slots against plain diffusers at its best, side by side in one run.

    python -m bench.serve --json [--quick] [--cpu] [--threads N]

Every request renders the same prompt, size and steps (the family's default inference steps) for one user's
adapter, each request a different user's than the last. The variants take turns request by request (each going
first in turn), so a busy machine slows them alike; figures are medians, in wall time and in CPU time
(`time.thread_time`). On the CPU run with one torch thread (the default) the ratios come from CPU time, which is all
of a request's work and none of what else a shared machine runs; otherwise (CUDA, --threads > 1) from wall time.
Every adapter is read into memory before anything is timed: ours into its cache, diffusers' as state dicts
(`safetensors.torch.load_file`), so no variant touches the disk in the timed part. The plain diffusers variants, as an expert would write them:
- hotswap: `enable_lora_hotswap(target_rank=R)` before the first load, then
  `load_lora_weights(state_dict, adapter_name="default", hotswap=True)` per switch (one adapter in the pipeline,
  its weights replaced in place). `vs_diffusers_hotswap`: our request over this one. Goal <= 0.95.
- resident: every adapter loaded in the pipeline, `set_adapters` per request, with `RESIDENT` adapters resident
  and with 4 (what a careful user keeps). `vs_diffusers_resident`. Goal <= 0.95 (with 32).
- reload: `unload_lora_weights` + `load_lora_weights(state_dict)` per request. `vs_diffusers_reload`. Goal <= 0.75.
Each variant's picture for the same adapter is compared with ours (`picture_diff_max`, grey levels; goal 0): a
baseline that did not apply the adapter would be measuring something else.
- switch_ms: making the next user's adapter active, with 2, 8, 32 and 128 adapters in memory: ours (tensors copied
  into a slot), diffusers' hotswap (state dicts in memory), diffusers' resident `set_adapters` (all loaded).
  switch_cpu_ms: the same switches in CPU time (`time.thread_time`, one torch thread): a preempted switch on a
  shared machine inflates wall time only. `switch_speedup_vs_hotswap`: diffusers' hotswap switch over ours, per N,
  in CPU time. Goal >= 5 at every N.
- switch_growth: our switch with 32 in memory over ours with 2, in CPU time. Goal <= 1.2.
- bytes_per_adapter: memory one resident adapter takes in our cache.
- rss_growth_mb: process memory growth over N switches (a 1-step render each) after a warm-up cycle, with every
  adapter in memory and with a cache too small for them (each switch reads a file); about 0 means bounded.
CPU: the tiny SD 1.5 model, one torch thread by default. `--published`: also switch_ms (nothing rendered) on SD
1.5's published architecture with random weights, fp16 on the CPU, ours against diffusers' hotswap. CUDA (a GPU
present, --cpu not given): requests on the real-size SD 1.5 and SDXL architectures (random weights), compile off
and on (the hotswap baseline compiled too). Goals are judged on the CPU figures (bench/goals.py); the exit status
is 1 when one is missed.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import psutil
import torch
from diffusers.utils import logging as diffusers_logging

from bench.goals import Goal, finish
from bench.serve_baselines import (
    HOTSWAP_NAME, PROMPT, Bench, phase, switch_figures, timed_cpu, write_random_adapters,
)
from bench.serve_published import published_switches
from trainer.serving.adapter_cache import AdapterSource
from trainer.serving.server import Sampling

RESIDENT_COUNTS = (2, 8, 32, 128)
RESIDENT = 32
SWITCH_SPEEDUP_GOAL = 5.0
GOALS = [
    Goal("vs_diffusers_hotswap", "<=", 0.95),
    Goal("vs_diffusers_resident", "<=", 0.95),
    Goal("vs_diffusers_reload", "<=", 0.75),
    *(Goal(f"switch_speedup_vs_hotswap.{count}", ">=", SWITCH_SPEEDUP_GOAL) for count in RESIDENT_COUNTS),
    Goal("switch_growth", "<=", 1.2),
    Goal("picture_diff_max", "==", 0),
]
def measure_switches(bench: Bench, sources: list[AdapterSource], switches: int) -> dict:
    """switch_ms with 2, 8, 32 and 128 adapters in memory: ours, diffusers' hotswap and diffusers' resident
    `set_adapters`, taking turns switch by switch."""
    ours, resident, hotswap = bench.runtime(), bench.plain_pipeline(), bench.hotswap_pipeline(sources[0])
    loaded: list[AdapterSource] = []
    result: dict = {"per_count": {}}
    for count in RESIDENT_COUNTS:
        phase(f"switches with {count} in memory")
        for source in sources[len(loaded):count]:
            bench.load_plain(resident, source)
            ours.use_adapters([(source, 1.0)])
            loaded.append(source)
        variants = {
            "ours": lambda source: ours.use_adapters([(source, 1.0)]),
            "diffusers_hotswap": lambda source: bench.load_plain(hotswap, source, HOTSWAP_NAME, hotswap=True),
            "diffusers_resident": lambda source: resident.set_adapters([source.key], [1.0]),
        }
        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        for index in range(switches):
            source = loaded[index % count]
            for name, switch in variants.items():
                took, used = timed_cpu(lambda: (switch(source), bench.sync()))
                wall[name].append(took)
                cpu[name].append(used)
        result["per_count"][str(count)] = switch_figures(wall, cpu)
    result["bytes_per_adapter"] = ours.adapters.resident_bytes // len(ours.adapters)
    result["our_slots"] = len(ours.adapters.slots.slots)
    del ours, resident, hotswap
    gc.collect()
    return result


def measure_requests(bench: Bench, sources: list[AdapterSource], rounds: int) -> dict:
    """Median request (switch + render) for ours and the three plain diffusers variants, taking turns."""
    phase(f"requests with {len(sources)} resident")
    ours, resident, reload = bench.runtime(), bench.plain_pipeline(), bench.plain_pipeline()
    hotswap = bench.hotswap_pipeline(sources[-1])
    for source in sources:
        ours.use_adapters([(source, 1.0)])
        bench.load_plain(resident, source)

    def our_request(source):
        ours.use_adapters([(source, 1.0)])
        image = ours.text2img(bench.sampling)
        bench.sync()
        return image

    def hotswap_request(source):
        bench.load_plain(hotswap, source, HOTSWAP_NAME, hotswap=True)
        return bench.plain_render(hotswap)

    def resident_request(source):
        resident.set_adapters([source.key], [1.0])
        return bench.plain_render(resident)

    def reload_request(source):
        reload.unload_lora_weights()
        bench.load_plain(reload, source)  # the only adapter, so the active one
        return bench.plain_render(reload)

    variants = {"ours": our_request, "diffusers_hotswap": hotswap_request, "diffusers_resident": resident_request,
                "diffusers_reload": reload_request}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    pictures: dict[str, np.ndarray] = {}
    names = list(variants)
    for round_ in range(rounds + 1):
        turn = round_ % len(names)
        for name in names[turn:] + names[:turn]:  # each variant goes first in turn
            images = []
            took, used = timed_cpu(lambda: images.append(variants[name](sources[round_ % len(sources)])))
            if round_:  # round 0 warms every code path up and keeps the pictures
                wall[name].append(took)
                cpu[name].append(used)
            else:
                pictures[name] = np.asarray(images[0], dtype=np.int16)
    del ours, resident, reload, hotswap
    gc.collect()
    return {"resident": len(sources), "requests_timed": rounds,
            **request_ratios(wall, cpu, judged_on="cpu" if _all_work_on_this_thread(bench) else "wall"),
            "picture_diff": {name: int(np.abs(picture - pictures["ours"]).max())
                             for name, picture in pictures.items() if name != "ours"}}


def _all_work_on_this_thread(bench: Bench) -> bool:
    """CPU time measures a request only when it all runs here: on the CPU, with one torch thread."""
    return bench.device.type == "cpu" and torch.get_num_threads() == 1


def request_ratios(wall: dict[str, list[float]], cpu: dict[str, list[float]], judged_on: str) -> dict:
    """Median request ms in wall and CPU time, and our median over each baseline's. On the CPU (one torch thread)
    a request's CPU time is all of its work and none of what else the machine runs, so the ratios come from it
    there; on CUDA, from wall time (the GPU's work is not CPU time)."""
    medians = {unit: {name: statistics.median(values) * 1000 for name, values in times.items()}
               for unit, times in (("wall", wall), ("cpu", cpu))}

    def ratios(unit: str) -> dict[str, float]:
        ours = medians[unit]["ours"]
        return {f"vs_{name}": round(ours / value, 3) for name, value in medians[unit].items() if name != "ours"}

    other = "wall" if judged_on == "cpu" else "cpu"
    return {"request_ms": {name: round(value, 1) for name, value in medians["wall"].items()},
            "request_cpu_ms": {name: round(value, 1) for name, value in medians["cpu"].items()},
            "ratios_from": f"{judged_on} time", **ratios(judged_on), f"ratios_in_{other}_time": ratios(other)}


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def measure_rss(bench: Bench, sources: list[AdapterSource], cache_mb: float, switches: int) -> dict:
    phase(f"memory over {switches} switches, cache {cache_mb:.2f} MB")
    runtime = bench.runtime(cache_mb=cache_mb)
    steps = Sampling(PROMPT, "", bench.sampling.width, bench.sampling.height, 1, bench.sampling.guidance, 1)
    for source in sources:  # warm-up cycle
        runtime.use_adapters([(source, 1.0)])
        runtime.text2img(steps)
    start = middle = _rss_mb()
    for index in range(switches):
        runtime.use_adapters([(sources[index % len(sources)], 1.0)])
        runtime.text2img(steps)
        if index + 1 == switches // 2:
            middle = _rss_mb()
    end = _rss_mb()
    return {"adapters": len(sources), "switches": switches, "cache_mb": cache_mb,
            "resident_after": len(runtime.adapters), "file_reads": runtime.adapters.stats.reads,
            "rss_growth_mb": round(end - start, 2), "rss_growth_second_half_mb": round(end - middle, 2)}


def run_family(family_name: str, model_path: str | None, work: Path, models_dir: Path, device: str,
               resolution: int, quick: bool, compile: bool = False, full: bool = True) -> dict:
    bench = Bench(family_name, model_path, work, models_dir, device, resolution, compile=compile)
    count = max(RESIDENT_COUNTS) if full else 8
    sources = write_random_adapters(bench.family, bench.model_path, work / "adapters", count, bench.device)
    bench.read_state_dicts(sources)
    report = {"family": family_name, "resolution": resolution, "steps": bench.sampling.steps,
              "device": str(bench.device), "compile": compile, "hotswap_target_rank": bench.max_rank()}
    at_32 = measure_requests(bench, sources[:RESIDENT if full else 4], rounds=12 if quick else 24)
    report.update(at_32)
    if not full:
        return report
    at_4 = measure_requests(bench, sources[:4], rounds=6 if quick else 12)
    report["with_4_resident"] = {key: value for key, value in at_4.items() if key not in ("resident", "picture_diff")}
    report["picture_diff_max"] = max([*at_32["picture_diff"].values(), *at_4["picture_diff"].values()])
    switches = measure_switches(bench, sources, switches=40 if quick else 100)
    per_count = switches["per_count"]
    for figure, unit in (("switch_ms", "wall_ms"), ("switch_cpu_ms", "cpu_ms")):
        report[figure] = {name: {count: figures[unit][name] for count, figures in per_count.items()}
                          for name in ("ours", "diffusers_hotswap", "diffusers_resident")}
    cpu_ms = report["switch_cpu_ms"]
    report["switch_speedup_vs_hotswap"] = {
        count: round(cpu_ms["diffusers_hotswap"][count] / cpu_ms["ours"][count], 1) for count in cpu_ms["ours"]}
    report["switch_growth"] = round(cpu_ms["ours"]["32"] / cpu_ms["ours"]["2"], 3)
    report["bytes_per_adapter"] = switches["bytes_per_adapter"]
    report["our_slots"] = switches["our_slots"]
    n = 50 if quick else 200
    per_adapter_mb = switches["bytes_per_adapter"] / 2**20
    report["rss"] = {"all_in_memory": measure_rss(bench, sources[:4], 4096, n),
                     "evicting": measure_rss(bench, sources[:6], 2.5 * per_adapter_mb, n)}
    report["rss_growth_mb"] = max(r["rss_growth_mb"] for r in report["rss"].values())
    return report


def cuda_report(work: Path, quick: bool) -> dict:
    try:
        from trainer.families.published import build_published_model
    except ImportError as error:
        return {"skipped": f"real-size architectures unavailable: {error}"}
    results = {}
    for base, resolution in (("sd15", 512), ("sdxl", 1024)):
        model_path = build_published_model(base, work / "published")
        for compile in (False, True):
            name = f"{base}-compile-{'on' if compile else 'off'}"
            results[name] = run_family(base, str(model_path), work / name, work / "published", "cuda", resolution,
                                       quick, compile=compile, full=False)
            torch.cuda.empty_cache()
    return {"device": torch.cuda.get_device_name(), "families": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer requests and switches")
    parser.add_argument("--cpu", action="store_true", help="the tiny model on CPU only, even when a GPU is present")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine more threads spin on each "
                             "other and the timings become noise)")
    parser.add_argument("--models-dir", type=Path, default=Path("data/models"), help="where tiny models are built")
    parser.add_argument("--published", action="store_true",
                        help="also time switches on SD 1.5's published architecture on the CPU (random weights, "
                             "about 2 GB built once under MODELS_DIR/published, two 2 GB pipelines in memory)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    diffusers_logging.set_verbosity_error()  # plain diffusers warns once per load about text-encoder-free files
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="likeness-bench-serve-") as tmp:
        work = Path(tmp)
        args.models_dir.mkdir(parents=True, exist_ok=True)
        report = {"benchmark": "serve", "quick": args.quick, "cpu_threads": args.threads}
        if torch.cuda.is_available() and not args.cpu:
            report["cuda"] = cuda_report(work, args.quick)
        report["cpu"] = run_family("tiny-sd15", None, work / "cpu", args.models_dir, "cpu", 64, args.quick)
        if args.published:
            report["published_sd15"] = published_switches(work, args.models_dir, switches=20 if args.quick else 60)
    return judge(report, as_json=args.json)


HEADLINE = ("vs_diffusers_hotswap", "vs_diffusers_resident", "vs_diffusers_reload", "switch_ms", "switch_cpu_ms",
            "switch_speedup_vs_hotswap", "switch_growth", "picture_diff_max", "bytes_per_adapter", "rss_growth_mb")


def judge(report: dict, *, as_json: bool) -> int:
    """Copy the CPU run's headline figures to the top (absent ones stay absent), then judge GOALS on them."""
    cpu = report.get("cpu") or {}
    for key in HEADLINE:
        if key in cpu:
            report[key] = cpu[key]
    return finish(report, GOALS, as_json=as_json)


if __name__ == "__main__":
    sys.exit(main())
