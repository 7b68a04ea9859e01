"""Stable Diffusion 1.x: UNet noise prediction with one CLIP text encoder."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.training_utils import compute_snr
from diffusers.utils import convert_state_dict_to_kohya

from trainer.families.base import Embeds, ModelFamily


class SD15Family(ModelFamily):
    pipeline_class = StableDiffusionPipeline
    denoiser_class = UNet2DConditionModel
    denoiser_name = "unet"
    text_encoder_names = ("text_encoder",)
    preview_negative_prompt = ""  # classifier-free guidance needs an encoded empty prompt

    def pipeline_kwargs(self) -> dict[str, Any]:
        # Class images and previews are judged by people and metrics, not filtered; the
        # generation server adds its own NSFW check where the weights exist.
        return {"safety_checker": None, "requires_safety_checker": False}

    def training_scheduler(self, pipe):
        # The DreamBooth scripts train with DDPM built from the model's own scheduler config.
        return DDPMScheduler.from_config(pipe.scheduler.config)

    def encode_prompts(self, pipe, prompts: list[str], device: torch.device) -> Embeds:
        embeds, _ = pipe.encode_prompt(prompts, device, 1, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds}

    def denoiser_kwargs(self, cond: Embeds) -> dict[str, Any]:
        return {}

    def loss_per_example(self, pipe, scheduler, latents, cond, generator, min_snr_gamma):
        batch = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator)
        timesteps = timesteps.to(latents.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction = self.denoiser(pipe)(
            noisy, timesteps, cond["prompt_embeds"], return_dict=False, **self.denoiser_kwargs(cond)
        )[0]
        target = _noise_target(scheduler, latents, noise, timesteps)
        loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if min_snr_gamma:
            loss = loss * _min_snr_weights(scheduler, timesteps, min_snr_gamma)
        return loss

    def embeds_call_kwargs(self, positive: Embeds, negative: Embeds | None) -> dict[str, Any]:
        kwargs = {"prompt_embeds": positive["prompt_embeds"]}
        if negative is not None:
            kwargs["negative_prompt_embeds"] = negative["prompt_embeds"]
        return kwargs

    def kohya_state_dict(self, layers, alpha):
        combined = {f"{component}.{key}": value for component, sd in layers.items() for key, value in sd.items()}
        kohya = convert_state_dict_to_kohya(combined)
        result = {}
        for key, value in kohya.items():
            if key.endswith(".alpha"):
                # diffusers writes alpha = rank; ours may differ, and kohya scales by alpha / rank.
                value = torch.tensor(float(alpha))
            result[self._kohya_key(key)] = value.contiguous()
        return result

    def _kohya_key(self, key: str) -> str:
        # SD 1.x tools name the single text encoder "lora_te_" (te1/te2 is SDXL's naming).
        return key.replace("lora_te1_", "lora_te_", 1)


def _noise_target(scheduler, latents, noise, timesteps):
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {prediction_type!r} (expected epsilon or v_prediction)")


def _min_snr_weights(scheduler, timesteps, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), as in diffusers' training scripts."""
    snr = compute_snr(scheduler, timesteps)
    clipped = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr
