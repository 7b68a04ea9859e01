"""bench.serve --published: switch cost at real size, where a render is out of reach on a CPU.

SD 1.5's published architecture (random weights, built once under MODELS_DIR/published, about 2 GB), fp16 weights
on the CPU, nothing rendered: our LoRA slots against diffusers' hotswap (`enable_lora_hotswap` +
`load_lora_weights(state_dict, hotswap=True)`), with the adapters in memory for both, switch by switch in turn.
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from bench.serve_baselines import HOTSWAP_NAME, Bench, phase, switch_figures, timed_cpu, write_random_adapters
from trainer.families import get_family
from trainer.serving.server import FamilyRuntime


def published_switches(work: Path, models_dir: Path, switches: int, count: int = 8) -> dict:
    """Switch ms at real size, no render: SD 1.5's published architecture (random weights, built once under
    models_dir/published), fp16 weights on the CPU; ours against diffusers' hotswap, `count` adapters in memory."""
    from trainer.families.published import build_published_model

    phase("switches on the published SD 1.5 architecture")
    family, device, dtype = get_family("sd15"), torch.device("cpu"), torch.float16
    path = str(build_published_model("sd15", models_dir / "published"))
    sources = write_random_adapters(family, path, work / "published-adapters", count, device, dtype)
    bench = Bench("sd15", path, work / "published", models_dir / "published", "cpu", 512)
    bench.read_state_dicts(sources)
    ours = FamilyRuntime(family, family.load_pipeline(path, device, dtype), device, cache_mb=4096)
    hotswap = bench.plain_pipeline_in(dtype)
    hotswap.enable_lora_hotswap(target_rank=bench.max_rank())
    bench.load_plain(hotswap, sources[0], HOTSWAP_NAME)
    for source in sources:
        ours.use_adapters([(source, 1.0)])
    variants = {"ours": lambda source: ours.use_adapters([(source, 1.0)]),
                "diffusers_hotswap": lambda source: bench.load_plain(hotswap, source, HOTSWAP_NAME, hotswap=True)}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for index in range(switches):
        for name, switch in variants.items():
            took, used = timed_cpu(lambda: switch(sources[index % count]))
            wall[name].append(took)
            cpu[name].append(used)
    lora_layers = len(ours.adapters.slots.slots[0].layers)
    del ours, hotswap
    gc.collect()
    figures = switch_figures(wall, cpu)
    return {"family": "sd15 (published architecture, random weights)", "dtype": "float16", "device": "cpu",
            "adapters_in_memory": count, "lora_layers": lora_layers, "switches": switches,
            "switch_ms": figures["wall_ms"], "switch_cpu_ms": figures["cpu_ms"],
            "switch_speedup_vs_hotswap": round(figures["cpu_ms"]["diffusers_hotswap"] / figures["cpu_ms"]["ours"], 1)}
