"""Generating the evaluation images, and drift: how far an adapter moves outputs it was NOT trained for.

Drift follows the DreamBooth paper's concern (language drift of the class prior): prompts without the trigger
(the class prompt, e.g. "a photo of a person", plus neutral prompts) are rendered by the base model and by the
adapted model with the same seeds, and each pair is compared. An adapter that only learned its subject leaves
these images nearly unchanged (drift near 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from trainer.evaluation.metrics import DISTANCES, as_array, paired_distances

NEUTRAL_PROMPTS = ("a watercolor painting of a lighthouse", "a photo of a bowl of fruit on a table")
DRIFT_METRIC = "1-ssim"  # structure, bounded and size-independent; mean pixel difference is stored beside it
DRIFT_METRIC_LABEL = "1 - SSIM, base vs adapted, prompts without the trigger, same seeds"


@dataclass(frozen=True)
class RenderedPrompt:
    prompt: str
    seed: int
    image: Image.Image


def render(pipe, prompts: Sequence[str], seeds: Sequence[int], call_kwargs: dict) -> list[RenderedPrompt]:
    """Each prompt at each seed, one batch per prompt; a CPU generator per image keeps it reproducible."""
    rendered = []
    for prompt in prompts:
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
        with torch.no_grad():
            images = pipe(prompt=[prompt] * len(seeds), generator=generators, **call_kwargs).images
        rendered += [RenderedPrompt(prompt, int(seed), image) for seed, image in zip(seeds, images)]
    return rendered


@dataclass(frozen=True)
class DriftReport:
    mean: float  # mean DRIFT_METRIC over every (prompt, seed) pair
    pixel_mean: float  # mean absolute pixel difference over the same pairs
    per_prompt: dict[str, float]


def measure_drift(base: Sequence[RenderedPrompt], adapted: Sequence[RenderedPrompt]) -> DriftReport:
    """Compare base and adapted renders of the same (prompt, seed) pairs."""
    pairs = _pair_up(base, adapted)
    before = [as_array(b.image) for b, _ in pairs]
    after = [as_array(a.image) for _, a in pairs]
    structural = paired_distances(before, after, DISTANCES[DRIFT_METRIC])
    pixels = paired_distances(before, after, DISTANCES["mean_abs_pixel"])
    per_prompt: dict[str, list[float]] = {}
    for (b, _), value in zip(pairs, structural):
        per_prompt.setdefault(b.prompt, []).append(value)
    return DriftReport(float(np.mean(structural)), float(np.mean(pixels)),
                       {prompt: float(np.mean(values)) for prompt, values in per_prompt.items()})


def _pair_up(base: Sequence[RenderedPrompt], adapted: Sequence[RenderedPrompt]):
    by_key = {(r.prompt, r.seed): r for r in adapted}
    pairs = [(b, by_key[(b.prompt, b.seed)]) for b in base if (b.prompt, b.seed) in by_key]
    if not pairs:
        raise ValueError("no (prompt, seed) pair was rendered by both the base and the adapted model")
    return pairs
