"""Randomness derived from (seed, step) instead of from stateful iterators, so that a run
resumed at step k draws exactly what an uninterrupted run draws at step k."""

from __future__ import annotations

import hashlib

import torch


def derived_seed(seed: int, *parts: object) -> int:
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def step_generator(seed: int, step: int, purpose: str = "step") -> torch.Generator:
    """A CPU generator for one purpose at one step (CPU, so results match across devices)."""
    return torch.Generator(device="cpu").manual_seed(derived_seed(seed, purpose, step))
