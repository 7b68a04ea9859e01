"""Safety in the worker: the blocked-prompt message, and an NSFW image checker when its weights are local.

The bot's services refuse blocked prompts before queueing; the worker checks again with the same
`intake.captions.blocked_word`, because the admin may have changed the list while the job waited.
The image checker is the Stable Diffusion safety checker (a CLIP vision
model plus concept embeddings, `CompVis/stable-diffusion-safety-checker` layout: config, weights and the CLIP
image-processor config in one folder). It runs only when that folder exists on this machine: weights are never
downloaded. Flagged images are withheld, not blacked out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

def blocked_message(word: str) -> str:
    return f"This server no longer allows `{word}` in prompts, so the picture was not made; please rephrase."


class NsfwFilter:
    """The SD safety checker on local weights; `flags(images)` says which images to withhold."""

    def __init__(self, checker, processor, device: torch.device):
        self.checker = checker
        self.processor = processor
        self.device = device

    @classmethod
    def from_settings(cls, settings, device: torch.device) -> NsfwFilter | None:
        path = settings.safety_checker_path
        if not path:
            return None
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            log.warning("no safety checker weights in %s; images are not checked", folder)
            return None
        return cls.load(folder, device)

    @classmethod
    def load(cls, folder: Path, device: torch.device) -> NsfwFilter:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        checker = StableDiffusionSafetyChecker.from_pretrained(str(folder)).to(device).eval()
        processor = CLIPImageProcessor.from_pretrained(str(folder))
        log.info("NSFW checker loaded from %s", folder)
        return cls(checker, processor, device)

    @torch.inference_mode()
    def flags(self, images: Sequence[Image.Image]) -> list[bool]:
        if not images:
            return []
        rgb = [image.convert("RGB") for image in images]
        clip_input = self.processor(rgb, return_tensors="pt").pixel_values.to(self.device, self.checker.dtype)
        # The checker only uses `images` to blank flagged ones; we withhold those instead, so placeholders do.
        placeholders = [np.zeros((1, 1, 3), dtype=np.float32) for _ in rgb]
        _, flagged = self.checker(clip_input=clip_input, images=placeholders)
        return [bool(flag) for flag in flagged]
