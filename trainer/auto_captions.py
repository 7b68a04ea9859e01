"""BLIP captions for training photos, when a local BLIP model is configured. Runs in the worker (torch)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from intake.captions import BLIP_PROMPT, personalise_caption

log = logging.getLogger(__name__)

BLIP_MAX_NEW_TOKENS = 30
BLIP_BATCH = 8
WEIGHT_FILES = (
    "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json",
)

def caption_model_available(model_dir: Path | None) -> bool:
    return model_dir is not None and Path(model_dir).is_dir() and any(
        (Path(model_dir) / name).is_file() for name in WEIGHT_FILES
    )


def auto_caption(
    image_paths: Sequence[Path], model_dir: Path | None, trigger: str, class_noun: str
) -> list[str] | None:
    """BLIP captions with the trigger worked in, one per image, when `model_dir` holds BLIP weights; else None
    (the caller then uses the template). Runs in the worker: it imports torch."""
    if not caption_model_available(model_dir):
        return None
    import torch
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    processor = BlipProcessor.from_pretrained(str(model_dir))
    model = BlipForConditionalGeneration.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()
    captions: list[str] = []
    for start in range(0, len(image_paths), BLIP_BATCH):
        batch_paths = image_paths[start : start + BLIP_BATCH]
        images = []
        for path in batch_paths:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        inputs = processor(images=images, text=[BLIP_PROMPT] * len(images), return_tensors="pt").to(device, dtype)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=BLIP_MAX_NEW_TOKENS)
        texts = processor.batch_decode(output, skip_special_tokens=True)
        captions.extend(personalise_caption(text, trigger, class_noun) for text in texts)
    log.info("captioned %d photos with BLIP from %s", len(captions), model_dir)
    return captions
