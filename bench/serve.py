"""Generation serving: what switching between users' adapters costs on one resident base model.

    python -m bench.serve --json [--quick] [--cpu] [--threads N]

Measured side by side in one run, after warm-up, on the same server, prompt, size and steps (the family's default
inference steps), with requests of the different kinds taking turns so a busy machine slows them alike:
- switch_ratio: mean latency of requests alternating between several users' adapters (all cached) divided by the
  mean latency of repeated requests for one adapter. Target <= 1.10.
- reload_ratio: mean latency of a naive server that loads the whole pipeline (and the adapter) for every request,
  divided by ours on the same alternating requests. Target >= 10. End to end it is bounded by
  1 + load time / render time, so it only reaches 10 where loading dominates (real-size models from disk);
  `reload_overhead_ratio` compares the model-preparation part alone: full reload + adapter load against our
  `set_adapters` switch.
- rss_growth_mb: resident memory growth over N adapter switches (each followed by a 1-step render), after one
  warm-up cycle: with a cache that holds every adapter, and with a cache smaller than the number of adapters (so
  every switch evicts), once with hotswap into the evicted adapter's layers and once with delete + fresh load
  (`switch_call_ms` there is what a cache miss costs each way). `rss_growth_second_half_mb` is the growth over
  the last half of the switches: about 0 means bounded. The headline figure is the largest growth of the three.
CPU: the tiny SD 1.5 model, one torch thread by default (on a shared 2-core machine more threads spin on each
other and timings become noise). CUDA (a GPU present and --cpu not given): the same on real-size SD 1.5 and SDXL
architectures built from their published configs with random weights (trainer.families.published).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psutil
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from storage.settings import Settings
from trainer.families import get_family
from trainer.families.base import inference_dtype
from trainer.serving.adapter_cache import AdapterSource
from trainer.serving.server import GenerationServer, Sampling

TARGET_SWITCH = 1.10
TARGET_RELOAD = 10.0
PROMPT = "a photo of rraj person as a Van Gogh painting"


def write_random_adapters(family, model_path: str, folder: Path, count: int, device) -> list[AdapterSource]:
    """`count` LoRA files shaped like the trainer's (family default rank and targets), with random weights."""
    pipe = family.load_pipeline(model_path, device, inference_dtype(family, device))
    denoiser = family.denoiser(pipe)
    sources = []
    for index in range(count):
        config = LoraConfig(r=family.defaults.rank, lora_alpha=family.defaults.alpha, init_lora_weights="gaussian",
                            target_modules=list(family.defaults.target_modules))
        denoiser.add_adapter(config, adapter_name="bench")
        generator = torch.Generator().manual_seed(index)
        for name, param in denoiser.named_parameters():
            if "lora_" in name:
                param.data = (torch.randn(param.shape, generator=generator) * 0.05).to(param.device, param.dtype)
        layers = {family.denoiser_name: get_peft_model_state_dict(denoiser, adapter_name="bench")}
        family.save_lora_weights(folder / f"user{index}", layers, {family.denoiser_name: config.to_dict()})
        denoiser.delete_adapters("bench")
        path = folder / f"user{index}" / "pytorch_lora_weights.safetensors"
        sources.append(AdapterSource(f"user{index}", path, adapter_id=index + 1))
    del pipe, denoiser
    gc.collect()
    return sources


class Bench:
    def __init__(self, family_name: str, model_path: str | None, work: Path, models_dir: Path, device: str,
                 resolution: int):
        self.family = get_family(family_name)
        self.work = work
        data = work / "data"
        data.mkdir(parents=True, exist_ok=True)
        (data / "models").symlink_to(models_dir.resolve(), target_is_directory=True)
        self.settings = Settings(data_dir=data, model_family=family_name, model_path=model_path, device=device,
                                 adapter_cache_size=4)
        self.model_path = self.family.resolve_model_path(model_path, models_dir)
        self.device = torch.device(device)
        self.sampling = Sampling(PROMPT, "", resolution, resolution, self.family.defaults.inference_steps,
                                 self.family.defaults.guidance_scale, 1)

    def server(self, cache_size: int, hotswap: bool = True) -> GenerationServer:
        settings = self.settings.model_copy(update={"adapter_cache_size": cache_size})
        return GenerationServer(settings, device=self.device, hotswap=hotswap)

    def request(self, runtime, source: AdapterSource, steps: int | None = None) -> tuple[float, float]:
        """One request on the resident server: (total seconds, seconds spent making the adapter active)."""
        started = time.perf_counter()
        runtime.use_adapters([(source, 1.0)])
        switched = time.perf_counter()
        sampling = self.sampling if steps is None else replace(self.sampling, steps=steps)
        runtime.text2img(sampling)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started, switched - started

    def naive_request(self, source: AdapterSource) -> tuple[float, float]:
        """What a bot without a resident model does: load everything, load the adapter, render, drop it.
        Returns (total seconds, seconds spent loading the pipeline and the adapter)."""
        started = time.perf_counter()
        pipe = self.family.load_pipeline(self.model_path, self.device, inference_dtype(self.family, self.device))
        pipe.load_lora_weights(str(source.path.parent), weight_name=source.path.name, adapter_name="user")
        loaded = time.perf_counter()
        pipe(prompt=PROMPT, num_inference_steps=self.sampling.steps, guidance_scale=self.sampling.guidance,
             height=self.sampling.height, width=self.sampling.width, generator=torch.Generator("cpu").manual_seed(1))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - started
        del pipe
        gc.collect()
        return total, loaded - started


def _mean_ms(timings: list[tuple[float, float]], part: int = 0) -> float:
    return statistics.mean(t[part] for t in timings) * 1000


def measure_latency(bench: Bench, sources: list[AdapterSource], rounds: int, naive_rounds: int) -> dict:
    runtime = bench.server(cache_size=len(sources)).runtime()
    for source in sources:  # warm-up: every adapter loaded once, every code path run
        bench.request(runtime, source)
    same, switching, naive = [], [], []
    others = sources[1:]
    for round_ in range(rounds):
        bench.request(runtime, sources[0])  # a switch back to user 0; not counted
        same += [bench.request(runtime, sources[0]) for _ in range(len(others))]
        switching += [bench.request(runtime, source) for source in others]  # each one changes adapter
        if round_ < naive_rounds:
            naive.append(bench.naive_request(others[round_ % len(others)]))
    switch_ms, same_ms, naive_ms = _mean_ms(switching), _mean_ms(same), _mean_ms(naive)
    return {
        "same_adapter_ms": round(same_ms, 1),
        "switch_ms": round(switch_ms, 1),
        "switch_ratio": round(switch_ms / same_ms, 3),
        "switch_target": TARGET_SWITCH,
        "reload_per_request_ms": round(naive_ms, 1),
        "reload_ratio": round(naive_ms / switch_ms, 2),
        "reload_target": TARGET_RELOAD,
        # The model-preparation part of a request alone: full reload + adapter load, against our set_adapters.
        "reload_load_ms": round(_mean_ms(naive, 1), 1),
        "switch_call_ms": round(_mean_ms(switching, 1), 2),
        "reload_overhead_ratio": round(_mean_ms(naive, 1) / max(_mean_ms(switching, 1), 1e-3), 1),
        "render_ms": round(switch_ms - _mean_ms(switching, 1), 1),
        "requests_timed": {"same": len(same), "switch": len(switching), "reload": len(naive)},
        "cache_stats": runtime.adapters.stats.__dict__,
        "pipeline_loads": 1,
    }


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def _vram_mb(device: torch.device) -> float:
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


def measure_rss(bench: Bench, sources: list[AdapterSource], cache_size: int, switches: int, hotswap: bool) -> dict:
    server = bench.server(cache_size=cache_size, hotswap=hotswap)
    runtime = server.runtime()
    for source in sources:  # warm-up cycle
        bench.request(runtime, source, steps=1)
    start, vram_start = _rss_mb(), _vram_mb(bench.device)
    middle, switch_times = start, []
    for index in range(switches):
        switch_times.append(bench.request(runtime, sources[index % len(sources)], steps=1)[1])
        if index + 1 == switches // 2:
            middle = _rss_mb()
    end, vram_end = _rss_mb(), _vram_mb(bench.device)
    stats = runtime.adapters.stats.__dict__.copy()
    adapter_mb = sources[0].path.stat().st_size / 2**20
    server.close()
    return {
        "cache_size": cache_size, "adapters": len(sources), "switches": switches, "hotswap": hotswap,
        "rss_growth_mb": round(end - start, 2), "rss_growth_second_half_mb": round(end - middle, 2),
        "cache_bound_mb": round(cache_size * adapter_mb, 2), "cache_stats": stats,
        "switch_call_ms": round(statistics.median(switch_times) * 1000, 2),
        "vram_growth_mb": round(vram_end - vram_start, 2),
    }


def run_family(family_name: str, model_path: str | None, work: Path, models_dir: Path, device: str,
               resolution: int, quick: bool) -> dict:
    bench = Bench(family_name, model_path, work, models_dir, device, resolution)
    sources = write_random_adapters(bench.family, bench.model_path, work / "adapters", 6, bench.device)
    users = sources[:3]
    report = {"family": family_name, "resolution": resolution, "steps": bench.sampling.steps,
              "device": str(bench.device), "users": len(users)}
    report.update(measure_latency(bench, users, rounds=3 if quick else 8, naive_rounds=2 if quick else 4))
    switches = 50 if quick else 200
    report["rss"] = {
        "all_cached": measure_rss(bench, sources[:4], 4, switches, hotswap=True),
        "evicting_hotswap": measure_rss(bench, sources, 2, switches, hotswap=True),
        "evicting_delete_and_load": measure_rss(bench, sources, 2, switches, hotswap=False),
    }
    report["rss_growth_mb"] = max(r["rss_growth_mb"] for r in report["rss"].values())
    return report


def cuda_report(work: Path, quick: bool) -> dict:
    try:
        from trainer.families.published import build_published_model
    except ImportError as error:  # built by the trainer's bench; report instead of losing the CPU figures
        return {"skipped": f"real-size architectures unavailable: {error}"}
    results = {}
    for base, resolution in (("sd15", 512), ("sdxl", 1024)):
        model_path = build_published_model(base, work / "published")
        results[base] = run_family(base, str(model_path), work / base, work / "published", "cuda", resolution,
                                   quick)
        torch.cuda.empty_cache()
    return {"device": torch.cuda.get_device_name(), "families": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and 50 switches instead of 200")
    parser.add_argument("--cpu", action="store_true", help="the tiny model on CPU even when a GPU is present")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine more threads spin on each "
                             "other and the timings become noise)")
    parser.add_argument("--models-dir", type=Path, default=Path("data/models"), help="where tiny models are built")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="likeness-bench-serve-") as tmp:
        work = Path(tmp)
        args.models_dir.mkdir(parents=True, exist_ok=True)
        report = {"benchmark": "serve", "quick": args.quick, "cpu_threads": args.threads}
        if torch.cuda.is_available() and not args.cpu:
            report["cuda"] = cuda_report(work, args.quick)
        report["cpu"] = run_family("tiny-sd15", None, work / "cpu", args.models_dir, "cpu", 64, args.quick)
        for key in ("switch_ratio", "reload_ratio", "rss_growth_mb"):
            report[key] = report["cpu"][key]
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
