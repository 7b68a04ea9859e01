"""Preview images during training: each subject's instance prompt and each class prompt without a
trigger, with fixed seeds, so both learning and drift of the class prior are visible.

Drift is measured against the base model's image for the same prompt and seed (LoRA disabled):
the mean absolute pixel difference in [0, 1].
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from trainer.families.base import Embeds, ModelFamily
from trainer.training.config import TrainConfig, class_prompt_for, subject_prompt_for
from trainer.training.memory import on_device
from trainer.training.seeding import derived_seed


def preview_prompts(config: TrainConfig) -> dict[str, str]:
    prompts = {f"instance:{s.trigger}": subject_prompt_for(s) for s in config.subjects}
    prompts.update({f"class:{noun}": class_prompt_for(noun) for noun in config.class_nouns()})
    return prompts


def image_distance(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two same-size RGB images, in [0, 1]."""
    left = np.asarray(a.convert("RGB"), dtype=np.float32)
    right = np.asarray(b.convert("RGB"), dtype=np.float32)
    return float(np.abs(left - right).mean() / 255.0)


class PreviewRenderer:
    def __init__(self, family: ModelFamily, pipe, config: TrainConfig, device: torch.device,
                 trained_modules: dict[str, torch.nn.Module]):
        self.family, self.pipe, self.config, self.device = family, pipe, config, device
        self.trained_modules = trained_modules
        self.prompts = preview_prompts(config)
        self.embeds: dict[str, Embeds] | None = None
        self.negative: Embeds | None = None
        self.baseline: dict[str, Image.Image] = {}

    @torch.no_grad()
    def cache_embeddings(self) -> None:
        """Encode the preview prompts while the text encoders are still on the device."""
        encoded = self.family.encode_prompts(self.pipe, list(self.prompts.values()), self.device)
        self.embeds = {
            key: {name: tensor[i:i + 1] for name, tensor in encoded.items()} for i, key in enumerate(self.prompts)
        }
        if self.family.preview_negative_prompt is not None:
            self.negative = self.family.encode_prompts(self.pipe, [self.family.preview_negative_prompt], self.device)

    def render_baseline(self) -> None:
        with _lora_disabled(self.trained_modules):
            self.baseline = self.render()

    def render(self) -> dict[str, Image.Image]:
        images = {}
        with on_device(self.pipe.vae, self.device):
            for index, (key, prompt) in enumerate(self.prompts.items()):
                generator = torch.Generator("cpu").manual_seed(derived_seed(self.config.seed, "preview", index))
                kwargs = self.family.generation_kwargs(self.config.resolution)
                kwargs.update(self._prompt_kwargs(key, prompt))
                images[key] = self.pipe(generator=generator, **kwargs).images[0]
        return images

    def _prompt_kwargs(self, key: str, prompt: str) -> dict:
        if self.embeds is None:  # text encoders are being trained: encode live
            negative = self.family.preview_negative_prompt
            return {"prompt": prompt, **({"negative_prompt": negative} if negative is not None else {})}
        return self.family.embeds_call_kwargs(self.embeds[key], self.negative)

    def drift(self, images: dict[str, Image.Image]) -> dict[str, float]:
        """Per-image distance to the base model's preview, plus class/instance means."""
        distances = {key: image_distance(image, self.baseline[key]) for key, image in images.items()
                     if key in self.baseline}
        summary = dict(distances)
        for kind in ("class", "instance"):
            values = [v for k, v in distances.items() if k.startswith(kind + ":")]
            if values:
                summary[f"{kind}_drift"] = float(np.mean(values))
        return summary


@contextmanager
def _lora_disabled(modules: dict[str, torch.nn.Module]):
    for module in modules.values():
        _set_adapters_enabled(module, False)
    try:
        yield
    finally:
        for module in modules.values():
            _set_adapters_enabled(module, True)


def _set_adapters_enabled(module: torch.nn.Module, enabled: bool) -> None:
    if hasattr(module, "enable_lora"):  # diffusers models
        module.enable_lora() if enabled else module.disable_lora()
    else:  # transformers models
        module.enable_adapters() if enabled else module.disable_adapters()
