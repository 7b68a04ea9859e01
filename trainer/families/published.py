"""Real-size SD 1.5, SDXL and FLUX.1 [dev] with random weights, for memory and speed benchmarks on a GPU.

The architecture numbers below are the published model configs (config.json of each component in
stable-diffusion-v1-5, stable-diffusion-xl-base-1.0 and FLUX.1-dev); weights cannot be downloaded
here, so they are random (each layer's own default init). The tokenizers are our tiny ones (their ids
fit inside the published vocabularies). Memory and speed do not depend on the weights' values.
"""

from __future__ import annotations

import contextvars
import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", projection_dim=768)
CLIP_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", projection_dim=1280)
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
              relative_attention_max_distance=128, layer_norm_epsilon=1e-6)
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), sample_size=64,
)
SDXL_UNET = dict(
    block_out_channels=(320, 640, 1280), layers_per_block=2, cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, sample_size=128,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
FLUX_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                        guidance_embeds=True, axes_dims_rope=(16, 56, 56))
FLUX_VAE = dict(SD_VAE, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                scaling_factor=0.3611, shift_factor=0.1159)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 steps_offset=1)
STORAGE_DTYPE = {"sd15": torch.float16, "sdxl": torch.float16, "flux": torch.bfloat16}
# FLUX with its real widths (hidden size, heads, joint attention dim, T5 width) but fewer blocks, so a CPU can
# train it: 1 double-stream and 2 single-stream blocks (of 19 and 38), 2 T5 layers (of 24).
REDUCED_FLUX_DEPTH = {"num_layers": 1, "num_single_layers": 2, "t5_layers": 2}
_MATERIALISE = contextvars.ContextVar("likeness_published_materialise", default=True)


def build_published_model(base: str, root: Path, reduced: bool = False) -> Path:
    """root/<base>-published: the published architecture with random weights (built once).

    reduced (FLUX only): the real widths with REDUCED_FLUX_DEPTH blocks, in root/flux-published-reduced.
    """
    if reduced and base != "flux":
        raise ValueError(f"only flux has a reduced build; {base} runs at its full depth")
    target = Path(root) / f"{base}-published{'-reduced' if reduced else ''}"
    if (target / "model_index.json").is_file():
        return target
    Path(root).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{base}-building-", dir=root))
    try:
        pipe = _build_flux(REDUCED_FLUX_DEPTH) if reduced else _BUILDERS[base]()
        pipe.save_pretrained(staging, safe_serialization=True, max_shard_size="5GB")
        del pipe
        stamp = {"base": base, "weights": "random", "depth": REDUCED_FLUX_DEPTH if reduced else "published"}
        (staging / "likeness_published.json").write_text(json.dumps(stamp))
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def published_pipeline_on_meta(base: str, reduced: bool = False):
    """The published pipeline with every parameter on the meta device (no memory, no init): its shapes and
    configs, for bench.weightless, which makes the weights while the product loads them."""
    token = _MATERIALISE.set(False)
    try:
        return _build_flux(REDUCED_FLUX_DEPTH) if reduced else _BUILDERS[base]()
    finally:
        _MATERIALISE.reset(token)


def random_module(model_class, dtype: torch.dtype, *args, **kwargs) -> torch.nn.Module:
    """Build on the meta device, materialise in `dtype`, then give every layer its default random init
    (inside published_pipeline_on_meta: stay on the meta device)."""
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on meta; buffers (position ids...) are real
        model = model_class(*args, **kwargs).to(dtype)
    if not _MATERIALISE.get():
        return model
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    try:  # initialising on the GPU is much faster, when the model fits
        model = model.to_empty(device="cuda" if torch.cuda.is_available() else "cpu")
    except torch.cuda.OutOfMemoryError:
        model = model.to_empty(device="cpu")
    initialised = set()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
        for module in model.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                initialised.update(id(p) for p in module.parameters(recurse=False))
        for name, parameter in model.named_parameters():
            if id(parameter) not in initialised:  # norm scales and free parameters
                parameter.fill_(1.0) if parameter.ndim == 1 and "weight" in name else parameter.normal_(0, 0.02)
    if callable(getattr(model, "tie_weights", None)):
        model.tie_weights()  # to_empty() gave tied embeddings separate storage
    return model.to("cpu")


def _clip(config: dict, tokenizer, dtype, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    text_config = CLIPTextConfig(**config, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
    return random_module(CLIPTextModelWithProjection if with_projection else CLIPTextModel, dtype, text_config)


def _build_sd15():
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from trainer.tiny import build_clip_tokenizer

    dtype, tokenizer = STORAGE_DTYPE["sd15"], build_clip_tokenizer()
    return StableDiffusionPipeline(
        vae=random_module(AutoencoderKL, dtype, **SD_VAE, scaling_factor=0.18215),
        text_encoder=_clip(CLIP_L, tokenizer, dtype), tokenizer=tokenizer,
        unet=random_module(UNet2DConditionModel, dtype, **SD15_UNET),
        scheduler=PNDMScheduler(skip_prk_steps=True, **SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _build_sdxl():
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from trainer.tiny import build_clip_tokenizer

    dtype, tokenizer = STORAGE_DTYPE["sdxl"], build_clip_tokenizer()
    return StableDiffusionXLPipeline(
        vae=random_module(AutoencoderKL, dtype, **SD_VAE, scaling_factor=0.13025, force_upcast=True),
        text_encoder=_clip(CLIP_L, tokenizer, dtype),
        text_encoder_2=_clip(CLIP_BIG_G, tokenizer, dtype, with_projection=True),
        tokenizer=tokenizer, tokenizer_2=tokenizer,
        unet=random_module(UNet2DConditionModel, dtype, **SDXL_UNET),
        scheduler=EulerDiscreteScheduler(**SCHEDULER),
    )


def flux_architecture(depth: dict | None = None) -> tuple[dict, dict]:
    """The FLUX transformer's and T5's config values, at the published depth or at `depth`'s block counts."""
    depth = depth or {}
    transformer = dict(FLUX_TRANSFORMER, **{key: value for key, value in depth.items() if key != "t5_layers"})
    return transformer, dict(T5_XXL, num_layers=depth.get("t5_layers", T5_XXL["num_layers"]))


def _build_flux(depth: dict | None = None):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from trainer.tiny import build_clip_tokenizer, build_t5_tokenizer

    dtype, clip_tokenizer, t5_tokenizer = STORAGE_DTYPE["flux"], build_clip_tokenizer(), build_t5_tokenizer()
    t5_tokenizer.model_max_length = 512
    transformer_config, t5_values = flux_architecture(depth)
    t5_config = T5Config(**t5_values, pad_token_id=t5_tokenizer.pad_token_id, eos_token_id=t5_tokenizer.eos_token_id,
                         decoder_start_token_id=t5_tokenizer.pad_token_id)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                  max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096),
        vae=random_module(AutoencoderKL, dtype, **FLUX_VAE),
        text_encoder=_clip(CLIP_L, clip_tokenizer, dtype), tokenizer=clip_tokenizer,
        text_encoder_2=random_module(T5EncoderModel, dtype, t5_config), tokenizer_2=t5_tokenizer,
        transformer=random_module(FluxTransformer2DModel, dtype, **transformer_config),
    )


_BUILDERS = {"sd15": _build_sd15, "sdxl": _build_sdxl, "flux": _build_flux}
