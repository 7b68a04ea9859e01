"""LoRA slots: pictures equal a fresh `load_lora_weights` bit for bit, on each family's tiny model (CPU).

Each family gets people of different ranks, one with text-encoder LoRA, and a style (for SD 1.5 a kohya file with
alpha != rank), switched through the slots in an order that makes every slot hold several adapters in turn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from storage.settings import Settings
from tests.trainer.serving_fixtures import (  # noqa: F401 (fixtures)
    lora_factory, one_torch_thread, serving_models_dir,
)
from trainer.families import get_family
from trainer.serving.adapter_cache import AdapterSource
from trainer.serving.server import GenerationServer, Sampling

SAMPLING = Sampling("a photo of rraj person", "blurry", 64, 64, 2, 4.0, 5, "euler")


def make_server(tmp_path: Path, models_dir: Path, family: str, name: str = "data", **settings) -> GenerationServer:
    data = tmp_path / name
    data.mkdir()
    (data / "models").symlink_to(models_dir, target_is_directory=True)
    return GenerationServer(Settings(data_dir=data, device="cpu", model_family=family, **settings))


def kohya_style(path: Path, family_name: str, folder: Path, alpha: float) -> Path:
    """The same LoRA rewritten in kohya format (the family's exporter) with another alpha, as admins upload."""
    family = get_family(family_name)
    layers: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            component, rest = key.split(".", 1)
            layers.setdefault(component, {})[rest] = handle.get_tensor(key)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "style.safetensors"
    save_file(family.kohya_state_dict(layers, alpha), str(target))
    return target


def adapters_for(family: str, factory, tmp_path: Path) -> dict[str, AdapterSource]:
    people = {
        "ann": AdapterSource("ann", factory(1, family=family, rank=4), adapter_id=1),
        "bob": AdapterSource("bob", factory(2, family=family, rank=8, text_encoder=True), adapter_id=2),
        "cat": AdapterSource("cat", factory(3, family=family, rank=2), adapter_id=3),
    }
    style = factory(4, family=family, rank=6)
    if family != "tiny-flux":  # diffusers has a kohya converter for SD 1.5 and SDXL
        style = kohya_style(style, family, tmp_path / "kohya", alpha=3.0)
    people["style"] = AdapterSource("style", style, style_id=1)
    return people


COMBOS = [  # (adapter, weight) lists, in request order
    [("bob", 1.0)],
    [("ann", 1.0), ("bob", 0.8), ("style", 0.6)],  # two people plus a style
    [("cat", 1.0)],
    [("ann", 1.0)],
    [("style", 1.0)],
    [("bob", 0.5), ("cat", 1.0), ("style", 0.6)],
    [("ann", 0.7)],
    [],
]


def render(runtime) -> np.ndarray:
    return np.asarray(runtime.text2img(SAMPLING), dtype=np.int16)


@pytest.mark.parametrize("family", [
    "tiny-sd15",
    pytest.param("tiny-sdxl", marks=pytest.mark.slow),
    pytest.param("tiny-flux", marks=pytest.mark.slow),
])
def test_slot_pictures_equal_fresh_loads(tmp_path, serving_models_dir, lora_factory, family):  # noqa: F811
    sources = adapters_for(family, lora_factory, tmp_path)
    ours = make_server(tmp_path, serving_models_dir, family, "ours").runtime()
    served = []
    for combo in COMBOS + COMBOS[:3]:  # twice through the first ones: every slot has held other adapters
        ours.use_adapters([(sources[name], weight) for name, weight in combo])
        served.append(render(ours))
    reference = make_server(tmp_path, serving_models_dir, family, "fresh").runtime()
    base = render(reference)
    for name, source in sources.items():
        reference.pipe.load_lora_weights(str(source.path.parent), weight_name=source.path.name, adapter_name=name)
    for index, combo in enumerate(COMBOS + COMBOS[:3]):
        if combo:
            reference.pipe.enable_lora()
            reference.pipe.set_adapters([n for n, _ in combo], [w for _, w in combo])
        else:
            reference.pipe.disable_lora()
        expected = render(reference)
        assert np.array_equal(served[index], expected), f"{family} {combo}: differs from a fresh load"
        if combo:
            assert np.abs(expected - base).mean() > 0.5, f"{family} {combo}: the adapters change nothing"
    assert np.array_equal(served[len(COMBOS) - 1], base)  # [] is the base model
    assert ours.adapters.stats.reads == len(sources)  # each file read once, then switched from memory


def test_switches_never_create_layers_once_slots_exist(tmp_path, serving_models_dir, lora_factory):  # noqa: F811
    runtime = make_server(tmp_path, serving_models_dir, "tiny-sd15").runtime()
    sources = [AdapterSource(f"p{seed}", lora_factory(seed), adapter_id=seed) for seed in (1, 2, 3, 5, 6)]
    runtime.use_adapters([(sources[0], 1.0), (sources[1], 1.0)])
    modules = [id(m) for m in runtime.pipe.unet.modules()]
    builds = runtime.adapters.slots.stats.builds
    for round_ in range(3):
        for first, second in zip(sources, sources[1:]):
            runtime.use_adapters([(first, 1.0), (second, 0.5)])
            runtime.use_adapters([(second, 1.0)])
    assert [id(m) for m in runtime.pipe.unet.modules()] == modules
    assert runtime.adapters.slots.stats.builds == builds == 2
    assert runtime.adapters.slots.stats.fills > 10
    assert sorted(runtime.pipe.get_list_adapters()["unet"]) == ["lkslot0", "lkslot1"]


def test_compiled_slots_swap_without_recompiling(tmp_path, serving_models_dir, lora_factory):  # noqa: F811
    """torch.compile (inductor, CPU) of the tiny UNet: after the first render, swapping adapters of other ranks
    and weights, and the base model, never recompiles (dynamo's error_on_recompile would raise)."""
    import torch._dynamo

    torch._dynamo.reset()
    runtime = make_server(tmp_path, serving_models_dir, "tiny-sd15", lora_slot_rank=8, serving_compile="on").runtime()
    assert runtime.compiled  # "auto" compiles on CUDA only
    sources = [AdapterSource(f"p{seed}-{rank}", lora_factory(seed, rank=rank)) for seed, rank in
               ((1, 4), (2, 8), (3, 2))]
    runtime.use_adapters([(sources[0], 1.0)])
    first = render(runtime)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for source, weight in ((sources[1], 1.0), (sources[2], 0.6), (sources[0], 1.0)):
            runtime.use_adapters([(source, weight)])
            last = render(runtime)
        runtime.use_adapters([])
        base = render(runtime)
    assert runtime.adapters.slots.stats.builds == 1 and runtime.adapters.slots.stats.fills == 4
    assert np.abs(last.astype(int) - first.astype(int)).max() <= 2  # same adapter back, compiled rounding aside
    assert np.abs(base - first).mean() > 0.5
    # Against a fresh eager `load_lora_weights`: compiled pictures differ by at most 2 grey levels (the README's
    # figure; 1 measured here on CPU, in a few pixels, as for the base model without any adapter).
    eager = make_server(tmp_path, serving_models_dir, "tiny-sd15", "eager").runtime()
    eager.pipe.load_lora_weights(str(sources[0].path.parent), weight_name=sources[0].path.name, adapter_name="p")
    assert np.abs(render(eager) - first).max() <= 2
    eager.pipe.disable_lora()
    assert np.abs(render(eager) - base).max() <= 2
