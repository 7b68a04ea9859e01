"""What each model family is and its training defaults. Torch-free, so configs validate anywhere.

Sources of the defaults (published practice):
- [DB-LoRA] diffusers `examples/dreambooth/train_dreambooth_lora.py` / `_sdxl.py` / `_flux.py` and their
  README: rank 4 with lora_alpha = rank, Gaussian init, lr 1e-4, 500 steps, constant LR, batch 1,
  prior_loss_weight 1.0, num_class_images 100, adam weight decay 1e-2 (1e-4 in the FLUX script),
  attention projections to_q/to_k/to_v/to_out.0, text-encoder q/k/v/out_proj.
- [DB-LoRA memory tips] the same READMEs: gradient checkpointing + 8-bit Adam for 16 GB cards,
  fp16 mixed precision, SDXL's VAE kept in fp32 (it overflows in fp16).
- [FLUX-QLoRA] diffusers `examples/research_projects/flux_lora_quantization`: NF4 transformer,
  rank 4, lr 1e-4, 700 steps, guidance 1 while training, 8-bit Adam, gradient checkpointing,
  cached latents; about 9 GB on a 4090.
- Sampling: each pipeline's published defaults (SD 1.5 guidance 7.5; SDXL base guidance 5.0;
  FLUX.1 [dev] 28 steps, guidance 3.5). We use 30 steps (not 50) for SD class images and previews:
  PNDM/Euler are converged there and class-image generation is the slow part of a first job.
"""

from __future__ import annotations

from dataclasses import dataclass

SD_ATTENTION = ("to_k", "to_q", "to_v", "to_out.0")  # [DB-LoRA]
CLIP_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")  # [DB-LoRA] text-encoder targets


@dataclass(frozen=True)
class FamilyDefaults:
    resolution: int
    rank: int
    alpha: float
    learning_rate: float
    steps: int
    target_modules: tuple[str, ...]
    text_encoder_target_modules: tuple[str, ...]
    gradient_checkpointing: bool
    optimizer: str
    quantize_base: str | None
    mixed_precision: str
    num_class_images: int
    prior_loss_weight: float
    weight_decay: float
    inference_steps: int  # class images, previews and generation
    guidance_scale: float
    checkpoint_every: int
    preview_every: int
    batch_size: int = 1


@dataclass(frozen=True)
class FamilySpec:
    name: str
    base: str  # "sd15" | "sdxl" | "flux"
    tiny: bool
    defaults: FamilyDefaults
    supports_nf4: bool
    supports_text_encoder_lora: bool
    supports_min_snr: bool
    resolution_multiple: int  # VAE downscale x (FLUX) 2x2 latent packing
    default_model_id: str | None = None


_SD15 = FamilyDefaults(
    resolution=512,  # SD 1.x native size
    rank=4, alpha=4.0, learning_rate=1e-4, steps=500,  # [DB-LoRA]
    target_modules=SD_ATTENTION, text_encoder_target_modules=CLIP_ATTENTION,
    gradient_checkpointing=True, optimizer="adamw8bit",  # [DB-LoRA memory tips]; keeps SD 1.5 under 6 GB
    quantize_base=None,  # the 0.9 B UNet fits comfortably in fp16
    mixed_precision="fp16",  # [DB-LoRA memory tips]
    num_class_images=100, prior_loss_weight=1.0, weight_decay=1e-2,  # [DB-LoRA]
    inference_steps=30, guidance_scale=7.5,
    checkpoint_every=100, preview_every=100,
)
_SDXL = FamilyDefaults(
    resolution=1024,  # SDXL native size
    rank=4, alpha=4.0, learning_rate=1e-4, steps=500,  # [DB-LoRA] SDXL README
    target_modules=SD_ATTENTION, text_encoder_target_modules=CLIP_ATTENTION,
    gradient_checkpointing=True, optimizer="adamw8bit",  # [DB-LoRA memory tips], the seed's T4 recipe
    quantize_base=None,  # fp16 UNet + checkpointing targets 12 GB; set "nf4" for smaller cards
    mixed_precision="fp16",
    num_class_images=100, prior_loss_weight=1.0, weight_decay=1e-2,
    inference_steps=30, guidance_scale=5.0,
    checkpoint_every=100, preview_every=100,
)
_FLUX = FamilyDefaults(
    resolution=512,  # [FLUX-QLoRA] at 512 px fits a 12 GB card
    rank=4, alpha=4.0, learning_rate=1e-4, steps=700,  # [FLUX-QLoRA]
    target_modules=SD_ATTENTION,  # [FLUX-QLoRA]: attention projections of all blocks
    text_encoder_target_modules=(),
    gradient_checkpointing=True, optimizer="adamw8bit", quantize_base="nf4",  # [FLUX-QLoRA]
    mixed_precision="bf16",  # FLUX weights are published in bf16
    num_class_images=100, prior_loss_weight=1.0, weight_decay=1e-4,  # [DB-LoRA] flux script
    inference_steps=28, guidance_scale=3.5,  # FLUX.1 [dev] defaults
    checkpoint_every=100, preview_every=100,
)


def _tiny(real: FamilyDefaults, **changes) -> FamilyDefaults:
    """Tiny models: same recipe, sized for CPU tests (64 px, a few steps, few class images)."""
    values = dict(real.__dict__)
    values.update(
        resolution=64, learning_rate=1e-3, steps=30, num_class_images=4, inference_steps=4,
        gradient_checkpointing=False, mixed_precision="no", quantize_base=None,
        checkpoint_every=10, preview_every=10,
    )
    values.update(changes)
    return FamilyDefaults(**values)


SPECS: dict[str, FamilySpec] = {
    "sd15": FamilySpec("sd15", "sd15", False, _SD15, supports_nf4=False, supports_text_encoder_lora=True,
                       supports_min_snr=True, resolution_multiple=8,
                       default_model_id="stable-diffusion-v1-5/stable-diffusion-v1-5"),
    "sdxl": FamilySpec("sdxl", "sdxl", False, _SDXL, supports_nf4=True, supports_text_encoder_lora=True,
                       supports_min_snr=True, resolution_multiple=8,
                       default_model_id="stabilityai/stable-diffusion-xl-base-1.0"),
    "flux": FamilySpec("flux", "flux", False, _FLUX, supports_nf4=True, supports_text_encoder_lora=False,
                       supports_min_snr=False, resolution_multiple=16,
                       default_model_id="black-forest-labs/FLUX.1-dev"),
    "tiny-sd15": FamilySpec("tiny-sd15", "sd15", True, _tiny(_SD15), supports_nf4=False,
                            supports_text_encoder_lora=True, supports_min_snr=True, resolution_multiple=8),
    "tiny-sdxl": FamilySpec("tiny-sdxl", "sdxl", True, _tiny(_SDXL), supports_nf4=True,
                            supports_text_encoder_lora=True, supports_min_snr=True, resolution_multiple=8),
    "tiny-flux": FamilySpec("tiny-flux", "flux", True, _tiny(_FLUX), supports_nf4=True,
                            supports_text_encoder_lora=False, supports_min_snr=False, resolution_multiple=16),
}
FAMILY_NAMES: tuple[str, ...] = tuple(SPECS)


def family_spec(name: str) -> FamilySpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; choose one of {', '.join(FAMILY_NAMES)}") from None
