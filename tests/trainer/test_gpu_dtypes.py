"""Each tiny family at the dtypes it gets on a GPU, on CPU: a training step, a class image, a preview, the export
and a served picture. A dtype mismatch between components (like SDXL's fp32 VAE under fp16 latents, found by
bench.realsize) then fails here, without a GPU.

On a GPU the trainer loads the frozen weights in fp16 (SD 1.5, SDXL) or bf16 (FLUX), trains the LoRA weights in
fp32, and the server renders in the same half precision; the VAE stays in the weights' dtype (SDXL's upcasts
itself to decode, and is cast to fp32 only to encode training images). On CPU both would pick fp32, so the two
dtype choices are pinned to the GPU's here; everything else is the product's own code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import trainer.serving.server as server_module
import trainer.training.class_images as class_images_module
import trainer.training.run as run_module
from bench.realsize import inference_steps_for
from storage.settings import Settings
from tests.trainer.training_fixtures import (  # noqa: F401
    RecordingHooks,
    make_config,
    models_dir,
    photo_dir,
    read_tensors,
    subject,
)
from trainer.serving.adapter_cache import AdapterSource
from trainer.serving.server import GenerationServer, Sampling
from trainer.training.run import train_adapter

GPU_DTYPES = {"tiny-sd15": torch.float16, "tiny-sdxl": torch.float16, "tiny-flux": torch.bfloat16}

pytestmark = pytest.mark.slow


@pytest.fixture
def gpu_dtype(monkeypatch, request) -> torch.dtype:
    dtype = GPU_DTYPES[request.param]
    monkeypatch.setattr(run_module, "resolve_weight_dtype", lambda config, device: dtype)
    monkeypatch.setattr(class_images_module, "inference_dtype", lambda family, device: dtype)
    monkeypatch.setattr(server_module, "inference_dtype", lambda family, device: dtype)
    return dtype


@pytest.mark.parametrize(("family", "gpu_dtype"), [(name, name) for name in GPU_DTYPES], indirect=["gpu_dtype"])
def test_family_at_its_gpu_dtype_trains_renders_exports_and_serves(family, gpu_dtype, tmp_path, models_dir,  # noqa: F811
                                                                   photo_dir):  # noqa: F811
    loaded = {}
    original = run_module._load_pipeline

    def keep(family_, config, device, dtype):
        loaded["pipe"] = original(family_, config, device, dtype)
        return loaded["pipe"]

    hooks = RecordingHooks()
    config = make_config(family, tmp_path, models_dir, tmp_path / "classes", [subject(photo_dir)], steps=1,
                         num_class_images=1, preview_every=1, resolution=64, optimizer="adamw")
    # Class images and previews at 1 denoising step: half precision is slow on a CPU, and the dtypes meet at
    # the first step already.
    with pytest.MonkeyPatch.context() as patch, inference_steps_for(family, 1):
        patch.setattr(run_module, "_load_pipeline", keep)
        result = train_adapter(config, hooks)

    pipe = loaded["pipe"]
    denoiser = pipe.transformer if family == "tiny-flux" else pipe.unet
    assert denoiser.dtype == gpu_dtype and pipe.vae.dtype == gpu_dtype  # the VAE as the family keeps it
    assert result.steps_done == 1 and result.class_images_generated == 1
    assert result.final_loss is not None and np.isfinite(result.final_loss)
    assert hooks.previews and all(image.size == (64, 64) for image in next(iter(hooks.previews.values())).values())
    tensors = read_tensors(result.adapter_path)
    assert tensors and all(torch.isfinite(t.float()).all() for t in tensors.values())

    settings = Settings(data_dir=tmp_path / "serve", model_family=family, device="cpu", _env_file=None)
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "models").symlink_to(models_dir, target_is_directory=True)
    server = GenerationServer(settings, device="cpu")
    try:
        runtime = server.runtime()
        runtime.use_adapters([(AdapterSource("rraj", result.adapter_path, adapter_id=1), 1.0)])
        image = runtime.text2img(Sampling("a photo of rraj person", "", 64, 64, 1, 5.0, 7))
        served = runtime.family.denoiser(runtime.pipe)
    finally:
        server.close()
    assert served.dtype == gpu_dtype
    pixels = np.asarray(image, dtype=np.float32)
    assert image.size == (64, 64) and pixels.std() > 0  # NaN latents decode to one flat colour
