"""Half-precision weights with the VAE the trainer needs: found by bench.realsize's real-size run.

On a GPU the trainer loads SDXL in fp16 and encodes its training images with the VAE in fp32. The VAE used to be
cast to fp32 for good, so the SDXL pipeline's own decode (class images, previews) fed it fp16 latents and failed
("Input type (c10::Half) and bias type (float) should be the same"). bf16 on CPU shows the same mismatch."""

from __future__ import annotations

import torch

from tests.trainer.training_fixtures import make_config, models_dir, photo_dir, subject  # noqa: F401
from trainer.families import get_family
from trainer.training.class_images import ensure_class_images
from trainer.training.run import _load_pipeline


def test_half_precision_sdxl_renders_class_images_and_encodes_in_fp32(tmp_path, models_dir, photo_dir):  # noqa: F811
    family = get_family("tiny-sdxl")
    config = make_config("tiny-sdxl", tmp_path, models_dir, tmp_path / "classes", [subject(photo_dir)])
    pipe = _load_pipeline(family, config, torch.device("cpu"), torch.bfloat16)  # bf16: CPU's half precision

    paths, made = ensure_class_images(family, None, models_dir, tmp_path / "classes", "a photo of a person", 64, 1,
                                      0, "cpu", pipeline=pipe)
    encoder_inputs = []
    hook = pipe.vae.encoder.register_forward_pre_hook(lambda module, args: encoder_inputs.append(args[0].dtype))
    try:
        mean, std = family.encode_pixels(pipe, torch.zeros(1, 3, 64, 64))
    finally:
        hook.remove()

    assert made == 1 and paths[0].is_file()
    assert encoder_inputs == [torch.float32]  # SDXL's VAE overflows in fp16: training images are encoded in fp32
    assert pipe.vae.dtype == torch.bfloat16  # and the VAE goes back, so the pipeline's decode keeps working
    assert mean.dtype == std.dtype == torch.float32 and torch.isfinite(mean).all()
