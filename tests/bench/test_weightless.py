"""Weightless models: the published architectures written without their weights (a few MB instead of tens of GB),
and random weights made while the product's own loader reads them."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

from bench.weightless import random_weights_on_load, write_weightless
from trainer.families import get_family
from trainer.families.published import published_pipeline_on_meta
from trainer.tiny import ensure_tiny_model


def header(path: Path) -> dict:
    with open(path, "rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        return json.loads(handle.read(size))


def parameters(path: Path) -> int:
    return sum(math.prod(entry["shape"]) for key, entry in header(path).items() if key != "__metadata__")


def test_the_published_sd15_is_written_without_its_weights(tmp_path):
    folder = write_weightless(published_pipeline_on_meta("sd15"), tmp_path / "sd15")
    files = [path for path in folder.rglob("*") if path.is_file()]
    logical = sum(path.stat().st_size for path in files)
    on_disk = sum(path.stat().st_blocks * 512 for path in files)
    assert parameters(folder / "unet" / "diffusion_pytorch_model.safetensors") == 859_520_964  # the published UNet
    assert parameters(folder / "text_encoder" / "model.safetensors") == 123_060_480
    assert logical > 2 * 10**9 and on_disk < 20 * 2**20  # 2 GB of fp16 weights, none of it written
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"


def test_the_product_loads_random_weights_from_a_weightless_model(tmp_path):
    family = get_family("tiny-flux")
    real = family.load_pipeline(str(ensure_tiny_model("tiny-flux", tmp_path / "models")), "cpu", torch.float32)
    folder = write_weightless(real, tmp_path / "weightless")
    with random_weights_on_load():
        loaded = family.load_pipeline(str(folder), "cpu", torch.float32)
        again = family.load_pipeline(str(folder), "cpu", torch.float32)
    shapes = {name: p.shape for name, p in real.transformer.named_parameters()}
    assert {name: p.shape for name, p in loaded.transformer.named_parameters()} == shapes
    matrices = [name for name, shape in shapes.items() if len(shape) == 2]
    weights = dict(loaded.transformer.named_parameters())
    assert all(not torch.equal(weights[name], dict(real.transformer.named_parameters())[name]) for name in matrices)
    assert all(torch.isfinite(p).all() for p in loaded.transformer.parameters())
    assert torch.equal(weights[matrices[0]], dict(again.transformer.named_parameters())[matrices[0]])  # seeded
    t5 = loaded.text_encoder_2
    assert t5.shared.weight.data_ptr() == t5.encoder.embed_tokens.weight.data_ptr()  # tied stays tied
    image = loaded("a photo", num_inference_steps=1, height=64, width=64, max_sequence_length=32).images[0]
    assert image.size == (64, 64)
    # outside the context the file reads as what it is: a header and no data
    plain = family.load_pipeline(str(folder), "cpu", torch.float32)
    assert float(plain.transformer.proj_out.weight.detach().abs().sum()) == 0.0
