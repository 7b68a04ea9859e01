"""A few real training steps per family: saved keys, metadata, kohya export, and that the adapter
loads into a fresh pipeline and changes what the trigger prompt produces."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.trainer.training_fixtures import (  # noqa: F401  (session fixtures)
    RecordingHooks,
    make_config,
    models_dir,
    photo_dir,
    read_metadata,
    read_tensors,
    shared_class_cache,
    subject,
)
from trainer.families import get_family
from trainer.training.export import ADAPTER_FILE
from trainer.training.run import train_adapter

DENOISER_PREFIX = {"tiny-sd15": "unet.", "tiny-sdxl": "unet.", "tiny-flux": "transformer."}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, models_dir, photo_dir, shared_class_cache):  # noqa: F811
    """One short job per family (default recipe for the tiny model: AdamW8bit, prior preservation)."""
    results = {}
    for family in DENOISER_PREFIX:
        job = tmp_path_factory.mktemp(family)
        config = make_config(family, job, models_dir, shared_class_cache, [subject(photo_dir)], steps=8,
                             optimizer="adamw8bit", learning_rate=2e-2, preview_every=4)
        hooks = RecordingHooks()
        results[family] = (config, train_adapter(config, hooks), hooks)
    return results


@pytest.mark.parametrize("family", list(DENOISER_PREFIX))
def test_adapter_keys_are_diffusers_lora_format(trained, family):
    config, result, hooks = trained[family]
    assert result.adapter_path.name == ADAPTER_FILE and result.adapter_path.parent == config.output_dir
    tensors = read_tensors(result.adapter_path)
    assert tensors and all(k.startswith(DENOISER_PREFIX[family]) for k in tensors)
    down = [k for k in tensors if k.endswith(".lora_A.weight")]
    up = [k for k in tensors if k.endswith(".lora_B.weight")]
    assert len(down) == len(up) == len(tensors) // 2
    assert all(tensors[k].shape[0] == config.rank for k in down)
    assert any(".to_q." in k for k in down) and any(".to_out.0." in k for k in down)
    assert any(float(tensors[k].abs().max()) > 0 for k in up)  # B starts at zero: training moved it


@pytest.mark.parametrize("family", list(DENOISER_PREFIX))
def test_adapter_metadata_describes_the_job(trained, family):
    config, result, hooks = trained[family]
    header = read_metadata(result.adapter_path)
    assert json.loads(header["triggers"]) == ["rraj"] and json.loads(header["class_nouns"]) == ["person"]
    assert header["family"] == family and header["base_model"] == f"{family}@v1"
    assert (header["rank"], header["alpha"], header["steps"]) == ("4", "4.0", "8")
    assert (header["prior_preservation"], header["seed"], header["resolution"]) == ("true", "0", "64")
    assert json.loads(header["lora_adapter_metadata"])[f"{DENOISER_PREFIX[family]}r"] == 4
    assert result.metadata["optimizer"] == "adamw8bit" and result.steps_done == 8
    assert result.stopped is None and len(result.loss_history) == 8
    assert result.class_images_generated in (0, 2)  # 0 when another test already filled the shared cache
    assert hooks.progress_steps == list(range(1, 9)) and hooks.between_calls == 8


@pytest.mark.parametrize("family", list(DENOISER_PREFIX))
def test_previews_show_instance_and_class_prompts(trained, family):
    config, result, hooks = trained[family]
    assert sorted(hooks.previews) == [4, 8]
    assert set(hooks.previews[4]) == {"instance:rraj", "class:person"}
    assert hooks.previews[8]["class:person"].size == (64, 64)
    assert set(result.preview_history) == {4, 8}
    assert result.preview_history[8]["class_drift"] >= 0.0


def test_kohya_export_where_diffusers_has_a_converter(trained):
    for family in ("tiny-sd15", "tiny-sdxl"):
        config, result, _ = trained[family]
        kohya = read_tensors(result.kohya_path)
        assert all(k.startswith("lora_unet_") for k in kohya)
        assert any(k.endswith(".lora_down.weight") for k in kohya)
        alphas = [v for k, v in kohya.items() if k.endswith(".alpha")]
        assert alphas and all(float(a) == config.alpha for a in alphas)
        header = read_metadata(result.kohya_path)
        assert header["ss_network_dim"] == "4" and header["ss_output_name"] == "likeness-rraj"
        assert header["ss_num_train_images"] == str(len(config.subjects[0].photos))
        assert float(header["ss_learning_rate"]) == config.learning_rate
        assert json.loads(header["ss_tag_frequency"])["1_rraj person"]["rraj"] == len(config.subjects[0].photos)
        assert result.metadata["kohya_export"] == "written"
    _, flux, _ = trained["tiny-flux"]
    assert flux.kohya_path is None and flux.metadata["kohya_export"].startswith("unavailable:")


@pytest.mark.parametrize("family", list(DENOISER_PREFIX))
def test_adapter_loads_into_fresh_pipeline_and_changes_trigger_output(trained, models_dir, family):  # noqa: F811
    config, result, _ = trained[family]
    spec = get_family(family)
    pipe = spec.load_pipeline(spec.resolve_model_path(None, models_dir), "cpu", torch.float32)
    kwargs = spec.generation_kwargs(64)

    def render():
        generator = torch.Generator().manual_seed(7)
        return np.asarray(pipe("a photo of rraj person", generator=generator, **kwargs).images[0], dtype=np.float32)

    before = render()
    pipe.load_lora_weights(str(result.adapter_path.parent), weight_name=ADAPTER_FILE, adapter_name="rraj")
    assert pipe.get_active_adapters() == ["rraj"]
    after = render()
    assert np.abs(after - before).mean() > 0.5  # out of 255: the adapter visibly changes the image
    pipe.disable_lora()
    assert np.abs(render() - before).max() == 0
