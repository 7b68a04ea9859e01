"""SDXL: UNet noise prediction with two CLIP text encoders, pooled embeds and size/crop ids."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionXLPipeline

from trainer.families.base import Embeds
from trainer.families.sd15 import SD15Family


class SDXLFamily(SD15Family):
    pipeline_class = StableDiffusionXLPipeline
    text_encoder_names = ("text_encoder", "text_encoder_2")
    preview_negative_prompt = None  # SDXL zeroes the negative embeddings for an empty prompt

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {}

    def vae_dtype(self, weight_dtype: torch.dtype) -> torch.dtype:
        # SDXL's VAE produces NaNs in fp16 (diffusers' SDXL script keeps it in fp32).
        return torch.float32

    def encode_prompts(self, pipe, prompts: list[str], device: torch.device) -> Embeds:
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def example_conditioning(self, original_size, crop_top_left, resolution) -> Embeds:
        # SDXL micro-conditioning: original size, crop corner and target size of each image.
        ids = [*original_size, *crop_top_left, resolution, resolution]
        return {"time_ids": torch.tensor(ids, dtype=torch.float32)}

    def denoiser_kwargs(self, cond: Embeds) -> dict[str, Any]:
        embeds = cond["prompt_embeds"]
        added = {
            "text_embeds": cond["pooled_prompt_embeds"],
            "time_ids": cond["time_ids"].to(embeds.device, embeds.dtype),
        }
        return {"added_cond_kwargs": added}

    def embeds_call_kwargs(self, positive: Embeds, negative: Embeds | None) -> dict[str, Any]:
        kwargs = {
            "prompt_embeds": positive["prompt_embeds"],
            "pooled_prompt_embeds": positive["pooled_prompt_embeds"],
        }
        if negative is not None:
            kwargs["negative_prompt_embeds"] = negative["prompt_embeds"]
            kwargs["negative_pooled_prompt_embeds"] = negative["pooled_prompt_embeds"]
        return kwargs

    def _kohya_key(self, key: str) -> str:
        return key
