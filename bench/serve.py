"""Serving adapters: our LoRA slots against plain diffusers servers, side by side in one run.

    python -m bench.serve --json [--quick] [--cpu] [--threads N]

Every request renders the same prompt, size and steps (the family's default inference steps) for one user's
adapter, each request a different user's than the last. The variants take turns request by request (each going
first in turn), so a busy machine slows them alike; figures are medians.
- vs_diffusers_resident: our request against plain diffusers with every adapter loaded in the pipeline and
  `set_adapters` per request, with `RESIDENT` adapters resident (also reported with 4). Goal <= 0.95.
- vs_diffusers_reload: our request against `unload_lora_weights` + `load_lora_weights` per request. Goal <= 0.75.
- switch_ms: making the next user's adapter active, with 2, 8, 32 and 128 adapters resident (ours: in memory as
  tensors, copied into a slot; diffusers: loaded in the pipeline, `set_adapters`).
- switch_growth: our switch with 32 resident over ours with 2. Goal <= 1.2.
- bytes_per_adapter: memory one resident adapter takes in our cache.
- rss_growth_mb: process memory growth over N switches (a 1-step render each) after a warm-up cycle, with every
  adapter in memory and with a cache too small for them (each switch reads a file); about 0 means bounded.
CPU: the tiny SD 1.5 model, one torch thread by default. CUDA (a GPU present, --cpu not given): the real-size SD 1.5
and SDXL architectures (random weights), compile off and on: seconds per image and switch cost.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from diffusers.utils import logging as diffusers_logging
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

from storage.settings import Settings
from trainer.families import get_family
from trainer.families.base import inference_dtype
from trainer.serving.adapter_cache import AdapterSource
from trainer.serving.server import GenerationServer, Sampling

GOALS = {"vs_diffusers_resident": 0.95, "vs_diffusers_reload": 0.75, "switch_growth": 1.2}
RESIDENT_COUNTS = (2, 8, 32, 128)
RESIDENT = 32
PROMPT = "a photo of rraj person as a Van Gogh painting"


def write_random_adapters(family, model_path: str, folder: Path, count: int, device) -> list[AdapterSource]:
    """`count` LoRA files shaped like the trainer's (family default rank and targets), with random weights:
    the first through peft and the pipeline's `save_lora_weights`, the others the same keys with other values."""
    pipe = family.load_pipeline(model_path, device, inference_dtype(family, device))
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

    def runtime(self, cache_mb: float | None = None):
        settings = self.settings
        if cache_mb is not None:
            settings = settings.model_copy(update={"adapter_cache_mb": cache_mb})
        return GenerationServer(settings, device=self.device, compile=self.compile).runtime()

    def plain_pipeline(self):
        pipe = self.family.load_pipeline(self.model_path, self.device, inference_dtype(self.family, self.device))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def plain_render(self, pipe, steps: int | None = None) -> None:
        s = self.sampling
        kwargs = {} if self.family.spec.base == "flux" else {"negative_prompt": None}
        pipe(prompt=s.prompt, num_inference_steps=steps or s.steps, guidance_scale=s.guidance, height=s.height,
             width=s.width, generator=torch.Generator("cpu").manual_seed(s.seed), **kwargs)
        self.sync()


def _phase(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _load_plain(pipe, source: AdapterSource) -> None:
    pipe.load_lora_weights(str(source.path.parent), weight_name=source.path.name, adapter_name=source.key)


def measure_switches(bench: Bench, sources: list[AdapterSource], switches: int) -> dict:
    """switch_ms with 2, 8, 32 and 128 resident adapters, ours and plain diffusers' taking turns."""
    ours, plain = bench.runtime(), bench.plain_pipeline()
    loaded: list[AdapterSource] = []
    result = {"ours": {}, "diffusers": {}}
    for count in RESIDENT_COUNTS:
        _phase(f"switches with {count} resident")
        for source in sources[len(loaded):count]:
            _load_plain(plain, source)
            ours.use_adapters([(source, 1.0)])
            loaded.append(source)
        ours_times, plain_times = [], []
        for index in range(switches):
            source = loaded[index % count]
            ours_times.append(_timed(lambda: (ours.use_adapters([(source, 1.0)]), bench.sync())))
            plain_times.append(_timed(lambda: (plain.set_adapters([source.key], [1.0]), bench.sync())))
        result["ours"][str(count)] = round(statistics.median(ours_times) * 1000, 3)
        result["diffusers"][str(count)] = round(statistics.median(plain_times) * 1000, 3)
    result["bytes_per_adapter"] = ours.adapters.resident_bytes // len(ours.adapters)
    result["our_slots"] = len(ours.adapters.slots.slots)
    del ours, plain
    gc.collect()
    return result


def measure_requests(bench: Bench, sources: list[AdapterSource], rounds: int) -> dict:
    """Median request (switch + render) for ours, plain resident and plain reload, taking turns."""
    _phase(f"requests with {len(sources)} resident")
    ours, resident, reload = bench.runtime(), bench.plain_pipeline(), bench.plain_pipeline()
    for source in sources:
        ours.use_adapters([(source, 1.0)])
        _load_plain(resident, source)

    def our_request(source):
        ours.use_adapters([(source, 1.0)])
        ours.text2img(bench.sampling)
        bench.sync()

    def resident_request(source):
        resident.set_adapters([source.key], [1.0])
        bench.plain_render(resident)

    def reload_request(source):
        reload.unload_lora_weights()
        _load_plain(reload, source)
        reload.set_adapters([source.key], [1.0])
        bench.plain_render(reload)

    variants = {"ours": our_request, "diffusers_resident": resident_request, "diffusers_reload": reload_request}
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(rounds + 1):
        for name in names[round_ % 3:] + names[:round_ % 3]:  # each variant goes first in turn
            took = _timed(lambda: variants[name](sources[round_ % len(sources)]))
            if round_:  # round 0 warms every code path up
                times[name].append(took)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    del ours, resident, reload
    gc.collect()
    return {
        "resident": len(sources), "requests_timed": rounds,
        "request_ms": {name: round(value, 1) for name, value in medians.items()},
        "vs_diffusers_resident": round(medians["ours"] / medians["diffusers_resident"], 3),
        "vs_diffusers_reload": round(medians["ours"] / medians["diffusers_reload"], 3),
    }


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def measure_rss(bench: Bench, sources: list[AdapterSource], cache_mb: float, switches: int) -> dict:
    _phase(f"memory over {switches} switches, cache {cache_mb:.2f} MB")
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
    report = {"family": family_name, "resolution": resolution, "steps": bench.sampling.steps,
              "device": str(bench.device), "compile": compile}
    at_32 = measure_requests(bench, sources[:RESIDENT if full else 4], rounds=8 if quick else 16)
    report.update(at_32)
    if not full:
        return report
    at_4 = measure_requests(bench, sources[:4], rounds=4 if quick else 8)
    report["with_4_resident"] = {key: at_4[key] for key in ("request_ms", "vs_diffusers_resident",
                                                            "vs_diffusers_reload")}
    switches = measure_switches(bench, sources, switches=20 if quick else 60)
    report["switch_ms"] = {"ours": switches["ours"], "diffusers": switches["diffusers"]}
    report["switch_growth"] = round(switches["ours"]["32"] / switches["ours"]["2"], 3)
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
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    diffusers_logging.set_verbosity_error()  # plain diffusers warns once per load about text-encoder-free files
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="likeness-bench-serve-") as tmp:
        work = Path(tmp)
        args.models_dir.mkdir(parents=True, exist_ok=True)
        report = {"benchmark": "serve", "quick": args.quick, "cpu_threads": args.threads, "goals": GOALS}
        if torch.cuda.is_available() and not args.cpu:
            report["cuda"] = cuda_report(work, args.quick)
        report["cpu"] = run_family("tiny-sd15", None, work / "cpu", args.models_dir, "cpu", 64, args.quick)
        for key in ("vs_diffusers_resident", "vs_diffusers_reload", "switch_growth", "switch_ms",
                    "bytes_per_adapter", "rss_growth_mb"):
            report[key] = report["cpu"][key]
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
