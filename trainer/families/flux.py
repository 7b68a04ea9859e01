"""FLUX.1: a rectified-flow transformer conditioned on CLIP (pooled) and T5 (sequence) embeddings."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3
from transformers import T5EncoderModel

from trainer.families.base import Embeds, ModelFamily

# Timestep sampling and loss weighting, as in diffusers' FLUX DreamBooth scripts (their default).
WEIGHTING_SCHEME = "none"
# FLUX.1 [dev] is guidance-distilled; the QLoRA example trains with guidance 1.
TRAINING_GUIDANCE = 1.0


class FluxFamily(ModelFamily):
    pipeline_class = FluxPipeline
    denoiser_class = FluxTransformer2DModel
    denoiser_name = "transformer"
    text_encoder_names = ("text_encoder", "text_encoder_2")
    nf4_text_encoders = {"text_encoder_2": T5EncoderModel}  # T5-XXL is 9.5 GB in bf16
    preview_negative_prompt = None
    kohya_unavailable_reason = (
        "diffusers has no PEFT-to-kohya converter for FLUX; ComfyUI loads the diffusers file directly"
    )

    @property
    def max_sequence_length(self) -> int:
        # T5 tokens per prompt: FLUX.1 [dev] uses 512; the tiny model 32 to keep CPU steps fast.
        return 32 if self.spec.tiny else 512

    def training_scheduler(self, pipe):
        # A fresh copy: the pipeline's scheduler is re-timestepped by every generation call.
        return FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)

    def encode_prompts(self, pipe, prompts: list[str], device: torch.device) -> Embeds:
        embeds, pooled, _text_ids = pipe.encode_prompt(
            prompts, prompt_2=None, device=device, max_sequence_length=self.max_sequence_length
        )
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def loss_per_example(self, pipe, scheduler, latents, cond, generator, min_snr_gamma):
        batch, channels, height, width = latents.shape
        noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
        u = compute_density_for_timestep_sampling(WEIGHTING_SCHEME, batch, generator=generator)
        indices = (u * scheduler.config.num_train_timesteps).long()
        timesteps = scheduler.timesteps[indices].to(latents.device)
        sigmas = scheduler.sigmas[indices].to(latents.device, latents.dtype).view(batch, 1, 1, 1)
        noisy = (1.0 - sigmas) * latents + sigmas * noise  # rectified-flow interpolation
        prediction = self._predict(pipe, noisy, timesteps, cond)
        target = noise - latents
        weighting = compute_loss_weighting_for_sd3(WEIGHTING_SCHEME, sigmas)
        squared = weighting.float() * (prediction.float() - target.float()) ** 2
        return squared.reshape(batch, -1).mean(dim=1)

    def _predict(self, pipe, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Embeds) -> torch.Tensor:
        transformer = self.denoiser(pipe)
        batch, channels, height, width = noisy.shape
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, noisy.device, noisy.dtype)
        embeds = cond["prompt_embeds"]
        text_ids = torch.zeros(embeds.shape[1], 3, device=noisy.device, dtype=noisy.dtype)
        guidance = None
        if transformer.config.guidance_embeds:
            guidance = torch.full((batch,), TRAINING_GUIDANCE, device=noisy.device, dtype=torch.float32)
        packed_prediction = transformer(
            hidden_states=packed,
            timestep=timesteps / 1000,  # the transformer scales timesteps by 1000 itself
            guidance=guidance,
            pooled_projections=cond["pooled_prompt_embeds"],
            encoder_hidden_states=embeds,
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        scale = pipe.vae_scale_factor
        return FluxPipeline._unpack_latents(packed_prediction, height * scale, width * scale, scale)

    def generation_kwargs(self, resolution: int | None = None) -> dict[str, Any]:
        return {**super().generation_kwargs(resolution), "max_sequence_length": self.max_sequence_length}

    def embeds_call_kwargs(self, positive: Embeds, negative: Embeds | None) -> dict[str, Any]:
        return {
            "prompt_embeds": positive["prompt_embeds"],
            "pooled_prompt_embeds": positive["pooled_prompt_embeds"],
        }
