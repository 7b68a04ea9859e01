"""Subject fidelity (do trigger-prompt images look like the training photos?) and prompt fidelity (CLIP-T).

Subject fidelity is measured for the adapted model AND for the base model on the same prompts and seeds, so a
number always comes with its baseline: an adapter that learned its subject scores clearly above its base.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from trainer.evaluation.embedders import ClipModel, ImageSimilarity, SimilarityUnavailable

log = logging.getLogger(__name__)

TRIGGER_PROMPTS = ("a photo of {trigger} {noun}", "a photo of {trigger} {noun} in a garden")


def trigger_prompts(trigger: str, noun: str) -> list[str]:
    return [template.format(trigger=trigger, noun=noun) for template in TRIGGER_PROMPTS]


def without_trigger(prompt: str, trigger: str) -> str:
    """The prompt as a CLIP model that never saw the trigger reads it: 'a photo of rraj person' -> 'a photo of
    person'."""
    return " ".join(re.sub(rf"\b{re.escape(trigger)}\b", " ", prompt, flags=re.IGNORECASE).split())


def aggregate(matrix: np.ndarray, how: str) -> float:
    """Mean over all (generated, photo) pairs, or mean over generated images of their closest photo."""
    if matrix.size == 0:
        raise ValueError("nothing to compare")
    return float(matrix.max(axis=1).mean() if how == "nearest" else matrix.mean())


@dataclass(frozen=True)
class FidelityScore:
    adapted: float
    base: float
    method: str
    key: str

    @property
    def gain(self) -> float:
        """Distance to the photos, base over adapted (> 1: the adapter moved towards the subject)."""
        return (1.0 - self.base) / max(1.0 - self.adapted, 1e-6)


def subject_fidelity(similarities: Sequence[ImageSimilarity], adapted: list[Image.Image], base: list[Image.Image],
                     photos: list[Image.Image], notes: list[str]) -> FidelityScore:
    """Score with the best method that can judge these images (the pixel fallback always can)."""
    for method in similarities:
        try:
            matrix_adapted = method.similarity(adapted, photos)
            matrix_base = method.similarity(base, photos)
        except SimilarityUnavailable as reason:
            notes.append(f"{method.key} skipped: {reason}")
            continue
        return FidelityScore(aggregate(matrix_adapted, method.aggregate), aggregate(matrix_base, method.aggregate),
                             method.method, method.key)
    raise RuntimeError("no subject-fidelity method could judge these images")


def prompt_fidelity(clip: ClipModel, images: list[Image.Image], prompts: list[str]) -> float:
    """CLIP-T: mean cosine similarity of each image with the prompt that made it."""
    return float(np.mean(clip.text_image_similarity(images, prompts)))
