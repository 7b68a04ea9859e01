"""The real-size architectures the CUDA benchmark builds match the published models' sizes."""

from __future__ import annotations

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, FluxTransformer2DModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from trainer.families import published


def _parameters(factory) -> int:
    with init_empty_weights():  # meta tensors: no memory, no time
        return sum(p.numel() for p in factory().parameters())


@pytest.mark.parametrize(
    ("name", "factory", "published_count"),
    [
        ("SD 1.5 UNet", lambda: UNet2DConditionModel(**published.SD15_UNET), 859_520_964),
        ("SDXL UNet", lambda: UNet2DConditionModel(**published.SDXL_UNET), 2_567_463_684),
        ("FLUX.1 transformer", lambda: FluxTransformer2DModel(**published.FLUX_TRANSFORMER), 11_901_408_320),
        ("CLIP ViT-L text", lambda: CLIPTextModel(CLIPTextConfig(**published.CLIP_L)), 123_060_480),
        ("OpenCLIP bigG text", lambda: CLIPTextModelWithProjection(CLIPTextConfig(**published.CLIP_BIG_G)),
         694_659_840),
        ("SD VAE", lambda: AutoencoderKL(**published.SD_VAE), 83_653_863),
    ],
)
def test_published_architectures_have_the_published_sizes(name, factory, published_count):
    assert _parameters(factory) == published_count, name


def test_random_module_initialises_every_parameter():
    model = published.random_module(CLIPTextModel, torch.float32, CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=99,
        bos_token_id=97, eos_token_id=98, pad_token_id=98))
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name
    norm = dict(model.named_modules())["final_layer_norm"]
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    assert model(torch.tensor([[1, 2, 3]])).last_hidden_state.isfinite().all()


def test_reduced_flux_has_the_published_widths_and_fewer_blocks():
    transformer, t5 = published.flux_architecture(published.REDUCED_FLUX_DEPTH)
    full_transformer, full_t5 = published.flux_architecture()
    widths = ("attention_head_dim", "num_attention_heads", "joint_attention_dim", "pooled_projection_dim",
              "in_channels", "axes_dims_rope")
    assert {k: transformer[k] for k in widths} == {k: full_transformer[k] for k in widths}
    assert {k: t5[k] for k in ("d_model", "d_ff", "num_heads", "d_kv")} == {k: full_t5[k] for k in
                                                                          ("d_model", "d_ff", "num_heads", "d_kv")}
    assert (transformer["num_layers"], transformer["num_single_layers"], t5["num_layers"]) == (1, 2, 2)
    full_depth = (full_transformer["num_layers"], full_transformer["num_single_layers"], full_t5["num_layers"])
    assert full_depth == (19, 38, 24)
    count = _parameters(lambda: FluxTransformer2DModel(**transformer))
    assert 0 < count < 11_901_408_320 / 10


def test_only_flux_has_a_reduced_build(tmp_path):
    with pytest.raises(ValueError, match="only flux"):
        published.build_published_model("sdxl", tmp_path, reduced=True)
