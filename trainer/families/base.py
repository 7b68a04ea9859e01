"""The interface every model family implements, plus the loading code they share.

Training, class-image generation, generation serving and evaluation all go through this:

    family = get_family("sdxl")
    path = family.resolve_model_path(model_path, models_dir)      # tiny-* are built on first use
    pipe = family.load_pipeline(path, device, dtype, quantize_nf4=False)
    pipe.load_lora_weights(adapter_dir, adapter_name="rraj")      # standard diffusers LoRA loading
    image = pipe(prompt, **family.generation_kwargs()).images[0]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import torch

from intake.family_specs import FamilyDefaults, FamilySpec

log = logging.getLogger(__name__)

Embeds = dict[str, torch.Tensor]  # per-prompt conditioning tensors, batch dimension first


class ModelFamily:
    """One diffusion architecture (SD 1.5, SDXL or FLUX), real or tiny."""

    pipeline_class: ClassVar[type]
    denoiser_class: ClassVar[type]
    denoiser_name: ClassVar[str]  # pipeline component: "unet" or "transformer"
    text_encoder_names: ClassVar[tuple[str, ...]]
    # Big text encoders that NF4 also quantizes (FLUX's T5-XXL), loaded through transformers.
    nf4_text_encoders: ClassVar[dict[str, type]] = {}
    # Negative prompt for previews made from embeddings; None = the pipeline's own default.
    preview_negative_prompt: ClassVar[str | None] = None

    def __init__(self, spec: FamilySpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def defaults(self) -> FamilyDefaults:
        return self.spec.defaults

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # ------------------------------------------------------------------ loading

    def resolve_model_path(self, model_path: str | None, models_dir: Path | None) -> str:
        """A hub id or local folder for from_pretrained; tiny models are built under models_dir."""
        if self.spec.tiny:
            from trainer.tiny import ensure_tiny_model

            if models_dir is None:
                raise ValueError(f"{self.name} needs models_dir to build and find the tiny model")
            return str(ensure_tiny_model(self.name, Path(models_dir)))
        return model_path or self.spec.default_model_id

    def model_identity(self, model_path: str | None) -> str:
        """A stable name for the base model, for cache keys and adapter metadata."""
        if self.spec.tiny:
            from trainer.tiny import TINY_BUILD_VERSION

            return f"{self.name}@v{TINY_BUILD_VERSION}"
        path = model_path or self.spec.default_model_id
        local = Path(path).expanduser()
        return str(local.resolve()) if local.exists() else path

    def load_pipeline(self, model_path: str, device: str | torch.device, dtype: torch.dtype,
                      quantize_nf4: bool = False, **from_pretrained_kwargs: Any):
        """A text-to-image pipeline on `device`, ready for `load_lora_weights`.

        With quantize_nf4 the denoiser (and FLUX's T5) are loaded 4-bit through bitsandbytes
        (diffusers' / transformers' BitsAndBytesConfig); the rest stays in `dtype`.
        """
        device = torch.device(device)
        components = self._nf4_components(model_path, device, dtype) if quantize_nf4 else {}
        kwargs = {**self.pipeline_kwargs(), **components, **from_pretrained_kwargs}
        pipe = self.pipeline_class.from_pretrained(model_path, dtype=dtype, **kwargs)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Extra from_pretrained arguments the family always wants."""
        return {}

    def _nf4_components(self, model_path: str, device: torch.device, dtype: torch.dtype) -> dict:
        from diffusers import BitsAndBytesConfig

        device_map = {"": _device_map_target(device)}
        quant = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        components = {
            self.denoiser_name: self.denoiser_class.from_pretrained(
                model_path, subfolder=self.denoiser_name, quantization_config=BitsAndBytesConfig(**quant),
                dtype=dtype, device_map=device_map,
            )
        }
        for name, model_class in self.nf4_text_encoders.items():
            from transformers import BitsAndBytesConfig as TransformersBitsAndBytesConfig

            components[name] = model_class.from_pretrained(
                model_path, subfolder=name, quantization_config=TransformersBitsAndBytesConfig(**quant),
                dtype=dtype, device_map=device_map,
            )
        return components

    # ------------------------------------------------------------------ components

    def denoiser(self, pipe) -> torch.nn.Module:
        return getattr(pipe, self.denoiser_name)

    def text_encoders(self, pipe) -> dict[str, torch.nn.Module]:
        return {n: getattr(pipe, n) for n in self.text_encoder_names if getattr(pipe, n, None) is not None}

    def training_scheduler(self, pipe):
        raise NotImplementedError

    def vae_dtype(self, weight_dtype: torch.dtype) -> torch.dtype:
        """The dtype to encode training images in (SDXL's VAE overflows in fp16)."""
        return weight_dtype

    # ------------------------------------------------------------------ data

    def encode_prompts(self, pipe, prompts: list[str], device: torch.device) -> Embeds:
        raise NotImplementedError

    def example_conditioning(self, original_size: tuple[int, int], crop_top_left: tuple[int, int],
                             resolution: int) -> Embeds:
        """Per-image conditioning besides the prompt (SDXL's size/crop ids); none by default."""
        return {}

    @torch.no_grad()
    def encode_pixels(self, pipe, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE posterior (mean, std) of images in [-1, 1], unscaled, in float32.

        The VAE is cast to vae_dtype only for the encoding: the pipeline decodes with the VAE in its own dtype
        (a fp32 VAE under fp16 latents fails in the pipeline's decode)."""
        vae = pipe.vae
        original = vae.dtype
        dtype = self.vae_dtype(original)
        if dtype != original:
            vae.to(dtype=dtype)
        try:
            dist = vae.encode(pixels.to(vae.device, dtype)).latent_dist
            return dist.mean.float(), dist.std.float()
        finally:
            if dtype != original:
                vae.to(dtype=original)

    def scale_latents(self, pipe, raw: torch.Tensor) -> torch.Tensor:
        config = pipe.vae.config
        shift = getattr(config, "shift_factor", None) or 0.0
        return (raw - shift) * config.scaling_factor

    # ------------------------------------------------------------------ objective

    def loss_per_example(self, pipe, scheduler, latents: torch.Tensor, cond: Embeds,
                         generator: torch.Generator, min_snr_gamma: float | None) -> torch.Tensor:
        """The training loss of each example in the batch (shape [batch]), in float32.

        All randomness (noise, timesteps) comes from `generator`, so a step can be replayed.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ generation

    def generation_kwargs(self, resolution: int | None = None) -> dict[str, Any]:
        """Default pipeline-call arguments (steps, guidance, size) for this family."""
        size = resolution or self.defaults.resolution
        return {
            "num_inference_steps": self.defaults.inference_steps,
            "guidance_scale": self.defaults.guidance_scale,
            "height": size,
            "width": size,
        }

    def embeds_call_kwargs(self, positive: Embeds, negative: Embeds | None) -> dict[str, Any]:
        """Pipeline-call arguments that pass precomputed prompt embeddings instead of text."""
        raise NotImplementedError

    # ------------------------------------------------------------------ saving

    def save_lora_weights(self, directory: Path, layers: dict[str, dict[str, torch.Tensor]],
                          adapter_metadata: dict[str, dict]) -> None:
        """Write pytorch_lora_weights.safetensors through the pipeline's own save_lora_weights.

        `layers` maps pipeline component names ("unet", "transformer", "text_encoder", ...) to PEFT
        state dicts; `adapter_metadata` holds each component's LoraConfig as a dict.
        """
        kwargs: dict[str, Any] = {}
        for component, state_dict in layers.items():
            kwargs[f"{component}_lora_layers"] = state_dict
            kwargs[f"{component}_lora_adapter_metadata"] = adapter_metadata.get(component)
        self.pipeline_class.save_lora_weights(save_directory=str(directory), safe_serialization=True, **kwargs)

    def kohya_state_dict(self, layers: dict[str, dict[str, torch.Tensor]], alpha: float):
        """The adapter in kohya/A1111/ComfyUI format, or None where diffusers has no converter."""
        return None

    kohya_unavailable_reason: ClassVar[str] = ""


def inference_device(setting: str) -> torch.device:
    """The device for a settings value: auto is CUDA when present, else the CPU."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(setting)


def inference_dtype(family: ModelFamily, device: torch.device) -> torch.dtype:
    """The weights' dtype for loading a pipeline to render with."""
    if device.type != "cuda":
        return torch.float32
    if family.spec.base == "flux" and torch.cuda.is_bf16_supported():
        return torch.bfloat16  # FLUX weights are published in bf16; fp16 overflows in its T5
    return torch.float16


def _device_map_target(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    return device.type
