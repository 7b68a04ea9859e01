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
from trainer.serving.adapter_cache import AdapterFileError, AdapterSource, lora_layout
from trainer.serving.server import GenerationServer, Sampling

PROMPT = Sampling(prompt="a photo of rraj person", negative_prompt="", width=64, height=64, steps=2, guidance=5.0,
                  seed=3, scheduler="euler")


@pytest.fixture
def server(tmp_path, serving_models_dir):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(serving_models_dir, target_is_directory=True)
    return GenerationServer(Settings(data_dir=data, device="cpu", adapter_cache_size=2))


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


def test_lru_eviction_order_and_delete_really_removes(server, sources):
    server.hotswap = False
    runtime = server.runtime()
    cache = runtime.adapters
    first = runtime.use_adapters([(sources[0], 1.0)])[0]
    runtime.use_adapters([(sources[1], 1.0)])
    runtime.use_adapters([(sources[0], 1.0)])  # a hit: a1 becomes most recent, a2 is now the LRU one
    assert cache.keys() == ["a2", "a1"] and cache.stats.hits == 1
    second = cache.name_of("a2")
    runtime.use_adapters([(sources[2], 1.0)])
    assert cache.keys() == ["a1", "a3"]
    listed = runtime.pipe.get_list_adapters()["unet"]
    assert second not in listed and first in listed and len(listed) == 2
    assert cache.stats.deletions == 1 and cache.stats.loads == 3


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
    assert runtime.adapters.stats.hotswaps > 0


def test_hotswapped_adapter_renders_exactly_like_a_fresh_load(server, sources, tmp_path,
                                                               serving_models_dir):  # noqa: F811
    runtime = server.runtime()
    for source in sources:  # a3 is hotswapped into a1's layers
        runtime.use_adapters([(source, 1.0)])
    assert runtime.adapters.stats.hotswaps == 1
    runtime.use_adapters([(sources[2], 0.7)])
    swapped = render(runtime)
    fresh_data = tmp_path / "fresh"
    fresh_data.mkdir()
    (fresh_data / "models").symlink_to(serving_models_dir, target_is_directory=True)
    fresh = GenerationServer(Settings(data_dir=fresh_data, device="cpu", adapter_cache_size=2)).runtime()
    fresh.use_adapters([(sources[2], 0.7)])
    assert np.array_equal(swapped, render(fresh))


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


def test_evict_missing_drops_forgotten_adapters_from_the_pipeline(server, sources):
    runtime = server.runtime()
    runtime.use_adapters([(sources[0], 1.0), (sources[1], 1.0)])
    gone_name = runtime.adapters.name_of("a1")
    assert server.cached_adapter_ids() == [1, 2]
    assert server.evict_missing({2}) == ["a1"]
    assert gone_name not in runtime.pipe.get_list_adapters().get("unet", [])
    assert server.cached_adapter_ids() == [2]


def test_text_encoder_adapters_are_loaded_fresh_not_hotswapped(server, lora_factory):  # noqa: F811
    runtime = server.runtime()
    te_source = AdapterSource("te", lora_factory(11, text_encoder=True), adapter_id=11)
    assert lora_layout(te_source.path, "unet") is None
    assert lora_layout(lora_factory(1), "unet") == lora_layout(lora_factory(2), "unet")
    assert lora_layout(lora_factory(1), "unet") != lora_layout(lora_factory(5, rank=8), "unet")
    for seed in (1, 2):
        runtime.use_adapters([(AdapterSource(f"a{seed}", lora_factory(seed), adapter_id=seed), 1.0)])
    runtime.use_adapters([(te_source, 1.0)])
    assert runtime.adapters.stats.hotswaps == 0 and runtime.adapters.stats.deletions == 1
    assert runtime.adapters.name_of("te") in runtime.pipe.get_list_adapters()["text_encoder"]


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
    names = runtime.use_adapters([(s, 1.0) for s in sources])  # capacity 2, three needed at once
    assert sorted(runtime.active_adapters()) == sorted(names)
    runtime.use_adapters([(sources[0], 1.0)])
    assert len(runtime.adapters) == 2  # trimmed back on the next request


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
