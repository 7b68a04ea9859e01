"""The generation server and its adapter cache, on the tiny SD 1.5 model (CPU)."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from storage.settings import Settings
from tests.trainer.serving_fixtures import (  # noqa: F401 (fixtures)
    lora_factory, serving_models_dir, one_torch_thread,
)
from trainer.serving.adapter_cache import AdapterFileError, AdapterSource
from trainer.serving.server import GenerationServer, Sampling

PROMPT = Sampling(prompt="a photo of rraj person", negative_prompt="", width=64, height=64, steps=2, guidance=5.0,
                  seed=3, scheduler="euler")


@pytest.fixture
def server(tmp_path, serving_models_dir):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(serving_models_dir, target_is_directory=True)
    return GenerationServer(Settings(data_dir=data, device="cpu"))


@pytest.fixture
def sources(lora_factory):  # noqa: F811
    return [AdapterSource(f"a{seed}", lora_factory(seed), adapter_id=seed) for seed in (1, 2, 3)]


def render(runtime, sampling=PROMPT) -> np.ndarray:
    return np.asarray(runtime.text2img(sampling), dtype=np.int16)


def base_weights_digest(pipe) -> str:
    """A hash of every non-LoRA parameter of the UNet and text encoder, under peft-independent names."""
    digest = hashlib.sha256()
    for module in (pipe.unet, pipe.text_encoder):
        params = {name.replace(".base_layer", ""): p for name, p in module.named_parameters() if "lora_" not in name}
        for name in sorted(params):
            digest.update(name.encode())
            digest.update(params[name].detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def test_memory_is_an_lru_bounded_in_megabytes(server, sources):
    runtime = server.runtime()
    cache = runtime.adapters
    runtime.use_adapters([(sources[0], 1.0)])
    per_adapter = cache.resident_bytes
    assert per_adapter > 0
    cache.budget_mb = 2.5 * per_adapter / 2**20  # room for two
    runtime.use_adapters([(sources[1], 1.0)])
    runtime.use_adapters([(sources[0], 1.0)])  # a hit: a1 becomes most recent, a2 is now the LRU one
    assert cache.keys() == ["a2", "a1"] and cache.stats.hits == 1
    runtime.use_adapters([(sources[2], 1.0)])
    assert cache.keys() == ["a1", "a3"] and cache.stats.evictions == 1 and cache.stats.reads == 3
    assert cache.resident_bytes == 2 * per_adapter
    with pytest.raises(KeyError):
        cache.name_of("a2")
    runtime.use_adapters([(sources[1], 1.0)])  # read again from its file
    assert cache.stats.reads == 4 and cache.keys() == ["a3", "a2"]


def slot_tensors(runtime, name: str) -> list[torch.Tensor]:
    slot = next(s for s in runtime.adapters.slots.slots if s.name == name)
    return [t for entry in slot.layers.values() for t in (entry.down, entry.up)]


def test_switching_never_reloads_or_touches_base_weights(server, sources, monkeypatch):
    runtime = server.runtime()
    pipe, before = runtime.pipe, base_weights_digest(runtime.pipe)

    def no_reload(*args, **kwargs):
        raise AssertionError("the base pipeline was loaded again")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", no_reload)
    for round_ in range(3):
        for source in sources:  # three adapters through a cache of two: evictions and hotswaps too
            runtime.use_adapters([(source, 1.0)])
            runtime.text2img(PROMPT)
    runtime.use_adapters([])
    assert server.runtime() is runtime and runtime.pipe is pipe and server.pipeline_loads == 1
    assert base_weights_digest(pipe) == before
    assert runtime.adapters.slots.stats.fills >= 9 and runtime.adapters.stats.reads == 3


def test_adapters_change_the_output_and_weights_compose(server, sources):
    runtime = server.runtime()
    base = render(runtime)
    runtime.use_adapters([(sources[0], 1.0)])
    one = render(runtime)
    runtime.use_adapters([(sources[0], 0.0)])
    assert np.array_equal(render(runtime), base)  # weight 0 is no adapter at all
    assert np.abs(one - base).mean() > 1.0
    runtime.use_adapters([(sources[0], 1.0), (sources[1], 0.0)])
    assert np.array_equal(render(runtime), one)  # a zero-weight partner changes nothing
    runtime.use_adapters([(sources[0], 1.0), (sources[1], 1.0)])
    both = render(runtime)
    runtime.use_adapters([(sources[0], 1.0), (sources[1], 0.5)])
    half = render(runtime)
    assert not np.array_equal(both, one) and not np.array_equal(half, both) and not np.array_equal(half, one)
    assert sorted(runtime.active_adapters()) == sorted(runtime.adapters.name_of(k) for k in ("a1", "a2"))
    runtime.use_adapters([])
    assert np.array_equal(render(runtime), base)


def test_evict_missing_drops_forgotten_adapters_and_zeroes_their_slot(server, sources):
    runtime = server.runtime()
    runtime.use_adapters([(sources[0], 1.0), (sources[1], 1.0)])
    gone_slot, kept_slot = runtime.adapters.name_of("a1"), runtime.adapters.name_of("a2")
    assert server.cached_adapter_ids() == [1, 2]
    assert server.evict_missing({2}) == ["a1"]
    assert server.cached_adapter_ids() == [2] and "a1" not in runtime.adapters
    assert all(not t.any() for t in slot_tensors(runtime, gone_slot))  # its weights left the model at once
    assert any(t.any() for t in slot_tensors(runtime, kept_slot))


def test_a_file_that_is_not_a_lora_gets_a_clear_error(server, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "notlora" / "pytorch_lora_weights.safetensors"
    path.parent.mkdir()
    save_file({"unet.conv_in.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(AdapterFileError, match="notlora"):
        server.runtime().use_adapters([(AdapterSource("notlora", path), 1.0)])
    assert len(server.runtime().adapters) == 0 and not server.runtime().adapters.slots.slots


def test_a_file_that_does_not_match_its_row_is_refused(server, lora_factory, tmp_path):  # noqa: F811
    copy = tmp_path / "adapter" / "pytorch_lora_weights.safetensors"
    copy.parent.mkdir()
    shutil.copyfile(lora_factory(1), copy)
    source = AdapterSource.for_adapter(1, "0" * 64, copy)
    with pytest.raises(AdapterFileError):
        server.runtime().use_adapters([(source, 1.0)])
    assert len(server.runtime().adapters) == 0


def test_a_request_needing_more_adapters_than_the_cache_holds_still_runs(server, sources):
    runtime = server.runtime()
    runtime.adapters.budget_mb = 1e-6  # smaller than one adapter
    names = runtime.use_adapters([(s, 1.0) for s in sources])  # three needed at once
    assert runtime.active_adapters() == names and len(set(names)) == 3 and len(runtime.adapters) == 3
    runtime.use_adapters([(sources[0], 1.0)])
    assert runtime.adapters.keys() == ["a1"]  # trimmed back on the next request


@pytest.mark.parametrize("name, expected", [
    ("ddim", "DDIMScheduler"), ("pndm", "PNDMScheduler"), ("euler", "EulerDiscreteScheduler"),
    ("euler_a", "EulerAncestralDiscreteScheduler"), ("dpmpp_2m", "DPMSolverMultistepScheduler"),
])
def test_scheduler_by_name_is_used_for_the_call_only(server, name, expected):
    runtime = server.runtime()
    seen = []
    sampling = Sampling("a photo", "", 64, 64, 2, 5.0, 1, name)
    runtime.text2img(sampling, on_step=lambda pipe, step: seen.append(type(pipe.scheduler).__name__))
    assert set(seen) == {expected} and len(seen) >= 2  # PNDM adds a warm-up step
    assert type(runtime.pipe.scheduler).__name__ == "PNDMScheduler"  # the model's own, kept for class images


def test_flux_maps_every_sampler_to_flow_matching_with_a_warning():
    from trainer.serving.schedulers import UnknownSchedulerError, choose_scheduler

    assert choose_scheduler("euler", "flux").warning is None
    assert "flow-matching" in choose_scheduler("ddim", "flux").warning
    with pytest.raises(UnknownSchedulerError, match="DPM\\+\\+ 2M"):
        choose_scheduler("lms", "sd15")


@pytest.mark.slow
def test_a_trained_adapter_changes_the_trigger_prompt(server, tmp_path, serving_models_dir):  # noqa: F811
    from tests.trainer.training_fixtures import make_config, subject, write_photos
    from trainer.training.run import train_adapter

    photos = tmp_path / "photos"
    photos.mkdir()
    write_photos(photos, "subject-a", count=2, seed=1)
    config = make_config("tiny-sd15", tmp_path / "job", serving_models_dir, tmp_path / "class",
                         [subject(photos)], steps=3, prior_preservation=False, learning_rate=5e-2)
    trained = train_adapter(config)
    runtime = server.runtime()
    base = np.asarray(runtime.text2img(PROMPT), dtype=np.float32)
    runtime.use_adapters([(AdapterSource("trained", trained.adapter_path), 1.0)])
    adapted = np.asarray(runtime.text2img(PROMPT), dtype=np.float32)
    assert np.abs(adapted - base).mean() > 0.5
    assert torch.is_grad_enabled()  # serving ran under inference_mode without leaking it


def test_img2img_and_inpaint_views_share_every_weight(server, sources):
    runtime = server.runtime()
    runtime.use_adapters([(sources[0], 1.0)])
    for view in (runtime.img2img_pipe(), runtime.inpaint_pipe()):
        for name in ("unet", "vae", "text_encoder"):
            assert getattr(view, name) is getattr(runtime.pipe, name)
        assert view.get_active_adapters() == runtime.pipe.get_active_adapters()
    assert runtime.img2img_pipe() is runtime.img2img_pipe()  # built once
    image = runtime.img2img(runtime.text2img(PROMPT), PROMPT, strength=0.5)
    assert image.size == (64, 64) and server.pipeline_loads == 1


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tiny-sdxl", "tiny-flux"])
def test_sdxl_and_flux_serve_adapters_on_one_resident_pipeline(tmp_path, serving_models_dir, lora_factory,  # noqa: F811
                                                               family):
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(serving_models_dir, target_is_directory=True)
    server = GenerationServer(Settings(data_dir=data, device="cpu", model_family=family))
    runtime = server.runtime()
    sampling = Sampling("a photo of rraj person", "blurry", 64, 64, 2, 3.5, 5, "euler")
    base = np.asarray(runtime.text2img(sampling), dtype=np.float32)
    runtime.use_adapters([(AdapterSource("x", lora_factory(1, family=family)), 1.0)])
    adapted = np.asarray(runtime.text2img(sampling), dtype=np.float32)
    assert np.abs(adapted - base).mean() > 0.5
    denoiser = runtime.family.denoiser_name
    assert getattr(runtime.img2img_pipe(), denoiser) is getattr(runtime.pipe, denoiser)
    assert runtime.img2img(runtime.text2img(sampling), sampling, strength=0.6).size == (64, 64)
    assert server.pipeline_loads == 1
