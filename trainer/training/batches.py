"""Turning examples into per-step batches, with latents and text embeddings cached once.

With caching on, each image is VAE-encoded once (its posterior mean and std are kept, and a fresh
latent is sampled every step, as the DreamBooth scripts' `latent_dist.sample()` does) and each
distinct prompt is encoded once while the text encoders are frozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trainer.families.base import Embeds, ModelFamily
from trainer.training.config import TrainConfig
from trainer.training.data import ClassSet, InstanceExample, TrainingImage, plan_batch
from trainer.training.seeding import step_generator

_VAE_CHUNK = 4
_PROMPT_CHUNK = 8


@dataclass
class TrainingBatch:
    latents: torch.Tensor  # scaled latents, instance examples first
    cond: Embeds  # prompt embeddings (+ per-image conditioning), same order
    prompts: list[str]
    num_instance: int


@dataclass
class ExampleSet:
    """A group of images (the instance photos, or one class noun's images) with prompt indices."""

    pixels: torch.Tensor  # [N, 3, res, res], on CPU
    prompt_ids: list[int]
    extras: Embeds  # per-image conditioning, [N, ...]
    mean: torch.Tensor | None = None  # cached VAE posterior, on the training device
    std: torch.Tensor | None = None
    nouns: list[str] = field(default_factory=list)


class TrainingDataset:
    def __init__(self, family: ModelFamily, pipe, config: TrainConfig, examples: list[InstanceExample],
                 class_sets: dict[str, ClassSet], device: torch.device, weight_dtype: torch.dtype):
        self.family, self.pipe, self.config = family, pipe, config
        self.device, self.weight_dtype = device, weight_dtype
        self.prompts: list[str] = []
        self.instance = self._example_set([e.image for e in examples], [e.prompt for e in examples])
        self.instance.nouns = [e.class_noun for e in examples]
        self.classes = {
            noun: self._example_set(s.images, [s.prompt] * len(s.images)) for noun, s in class_sets.items()
        }
        self.class_sizes = {noun: len(s.images) for noun, s in class_sets.items()} if class_sets else None
        self.embeds: Embeds | None = None

    def _example_set(self, images: list[TrainingImage], prompts: list[str]) -> ExampleSet:
        prompt_ids = [self._prompt_id(p) for p in prompts]
        conditioning = [
            self.family.example_conditioning(i.original_size, i.crop_top_left, self.config.resolution)
            for i in images
        ]
        extras = {key: torch.stack([c[key] for c in conditioning]) for key in (conditioning[0] if images else {})}
        return ExampleSet(torch.stack([i.pixels for i in images]), prompt_ids, extras)

    def _prompt_id(self, prompt: str) -> int:
        if prompt not in self.prompts:
            self.prompts.append(prompt)
        return self.prompts.index(prompt)

    # ------------------------------------------------------------------ caching

    def cache_latents(self) -> None:
        for example_set in [self.instance, *self.classes.values()]:
            means, stds = [], []
            for chunk in example_set.pixels.split(_VAE_CHUNK):
                mean, std = self.family.encode_pixels(self.pipe, chunk)
                means.append(mean.to(self.device))
                stds.append(std.to(self.device))
            example_set.mean, example_set.std = torch.cat(means), torch.cat(stds)

    @torch.no_grad()
    def cache_text_embeddings(self) -> None:
        chunks = [
            self.family.encode_prompts(self.pipe, self.prompts[i:i + _PROMPT_CHUNK], self.device)
            for i in range(0, len(self.prompts), _PROMPT_CHUNK)
        ]
        self.embeds = {key: torch.cat([c[key] for c in chunks]).detach() for key in chunks[0]}

    # ------------------------------------------------------------------ batches

    def plan(self, step: int):
        return plan_batch(step, self.config.seed, self.config.batch_size, self.instance.nouns, self.class_sizes)

    def batch(self, step: int) -> TrainingBatch:
        """The batch for `step`: a pure function of (seed, step) and the data."""
        plan = self.plan(step)
        rows = [(self.instance, i) for i in plan.instance_indices]
        rows += [(self.classes[noun], i) for noun, i in plan.class_picks]
        generator = step_generator(self.config.seed, step)
        latents = self._sample_latents(rows, generator)
        prompts = [self.prompts[s.prompt_ids[i]] for s, i in rows]
        cond = self._conditioning(rows, prompts)
        return TrainingBatch(latents, cond, prompts, len(plan.instance_indices))

    def _sample_latents(self, rows, generator: torch.Generator) -> torch.Tensor:
        if self.instance.mean is not None:
            mean = torch.stack([s.mean[i] for s, i in rows])
            std = torch.stack([s.std[i] for s, i in rows])
        else:
            pixels = torch.stack([s.pixels[i] for s, i in rows])
            mean, std = self.family.encode_pixels(self.pipe, pixels)
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        latents = self.family.scale_latents(self.pipe, mean + std * noise)
        return latents.to(self.device, self.weight_dtype)

    def _conditioning(self, rows, prompts: list[str]) -> Embeds:
        if self.embeds is not None:
            ids = torch.tensor([s.prompt_ids[i] for s, i in rows], device=self.device)
            cond = {key: value.index_select(0, ids) for key, value in self.embeds.items()}
        else:
            cond = self.family.encode_prompts(self.pipe, prompts, self.device)
        for key in self.instance.extras:
            cond[key] = torch.stack([s.extras[key][i] for s, i in rows]).to(self.device)
        return cond
