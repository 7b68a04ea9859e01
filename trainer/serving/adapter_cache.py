"""Adapters for one resident pipeline: read once into memory, switched by copying them into LoRA slots.

An adapter file is read into plain tensors (`lora_tensors.read_lora`: CPU, pinned where CUDA serves) and waits in
an LRU bounded in megabytes (`adapter_cache_mb`). A request copies the adapters it uses into the pipeline's LoRA
slots (`lora_slots.SlotBank`), one slot per adapter a single picture uses at once (people plus a style). So a
switch costs the same with 2 or 200 adapters in memory, no peft layer is ever created or deleted after the slots
exist, the base weights are never touched, and a `torch.compile`d denoiser sees the same modules every time.
Evicting an adapter (the LRU bound, a forgotten person) drops its tensors and zeroes any slot that holds it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from storage.files import sha256_file
from trainer.serving.lora_slots import SlotBank
from trainer.serving.lora_tensors import LoraTensors, UnsupportedLoraError, read_lora

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterSource:
    """One LoRA file to serve. `key` identifies its content (ids plus sha256), so a replaced file is a new key."""

    key: str
    path: Path  # a pytorch_lora_weights.safetensors (or any diffusers-loadable LoRA file)
    adapter_id: int | None = None  # adapters row (subjects)
    style_id: int | None = None  # styles row (admin style library)
    sha256: str | None = None  # checked before the file is loaded, when given

    @classmethod
    def for_adapter(cls, adapter_id: int, sha256: str, path: Path) -> AdapterSource:
        return cls(f"adapter{adapter_id}-{sha256[:12]}", Path(path), adapter_id=adapter_id, sha256=sha256)

    @classmethod
    def for_style(cls, style_id: int, sha256: str, path: Path) -> AdapterSource:
        return cls(f"style{style_id}-{sha256[:12]}", Path(path), style_id=style_id, sha256=sha256)


class AdapterFileError(Exception):
    """An adapter file that is missing, damaged, not what its row says it is, or of a kind we cannot serve."""


@dataclass
class CacheStats:
    reads: int = 0  # files read into memory
    hits: int = 0  # adapters found in memory
    evictions: int = 0


@dataclass
class _Resident:
    source: AdapterSource
    tensors: LoraTensors
    nbytes: int


@dataclass
class AdapterCache:
    pipe: object
    components: Mapping[str, torch.nn.Module]  # denoiser first, then text encoders, by pipeline attribute name
    budget_mb: float
    denoiser_prefix: str = "unet"
    compiled: bool = False
    min_rank: int = 0
    pin: bool = False
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        if self.budget_mb <= 0:
            raise ValueError("the adapter cache needs a positive memory budget")
        self._resident: OrderedDict[str, _Resident] = OrderedDict()  # least recently used first
        self._bytes = 0  # kept as a running total, so a switch never walks the residents
        self.slots = SlotBank(self.pipe, self.components, compiled=self.compiled, min_rank=self.min_rank)

    # Queries.
    def __contains__(self, key: str) -> bool:
        return key in self._resident

    def __len__(self) -> int:
        return len(self._resident)

    def keys(self) -> list[str]:
        """Keys in memory, least recently used first."""
        return list(self._resident)

    def name_of(self, key: str) -> str:
        """The slot (adapter name inside the pipeline) that holds `key` now."""
        name = self.slots.slot_of(key)
        if name is None:
            raise KeyError(key)
        return name

    @property
    def resident_bytes(self) -> int:
        return self._bytes

    def cached_adapter_ids(self) -> list[int]:
        return [e.source.adapter_id for e in self._resident.values() if e.source.adapter_id is not None]

    # Use.
    def use(self, uses: Sequence[tuple[AdapterSource, float]]) -> list[str]:
        """Make exactly these adapters active with these weights, in this order; [] is the base model.

        Returns the slot names. Adapters this call needs are never evicted by it; if they alone exceed the budget,
        the cache stays over it until a later call trims it.
        """
        needed = {source.key for source, _ in uses}
        placed = [(source.key, self._tensors(source), float(weight)) for source, weight in uses]
        try:
            names = self.slots.place(placed)
        except (ValueError, KeyError) as error:  # diffusers could not make a slot for it (an odd style file)
            self.slots.forget_active()
            keys = ", ".join(source.key for source, _ in uses)
            raise AdapterFileError(f"{keys}: cannot be put into a LoRA slot ({error})") from None
        self._trim(protected=needed)
        return names

    def _tensors(self, source: AdapterSource) -> LoraTensors:
        entry = self._resident.get(source.key)
        if entry is not None:
            self._resident.move_to_end(source.key)
            self.stats.hits += 1
            return entry.tensors
        _verify(source)
        try:
            tensors = read_lora(self.pipe, source.path, self.denoiser_prefix, pin=self.pin)
        except UnsupportedLoraError as error:
            raise AdapterFileError(f"{source.key}: {error}") from None
        except (OSError, ValueError, KeyError) as error:  # a damaged or foreign file
            raise AdapterFileError(f"{source.key}: cannot be read as a LoRA file ({error})") from None
        entry = _Resident(source, tensors, tensors.nbytes)
        self._resident[source.key] = entry
        self._bytes += entry.nbytes
        self.stats.reads += 1
        return tensors

    # Eviction.
    def evict(self, key: str) -> bool:
        entry = self._resident.pop(key, None)
        self.slots.drop(key)
        if entry is None:
            return False
        self._bytes -= entry.nbytes
        self.stats.evictions += 1
        return True

    def evict_missing(self, existing_adapter_ids: Iterable[int],
                      existing_style_keys: Iterable[str] | None = None) -> list[str]:
        """Drop adapters whose adapter row is gone (a forgotten user, a deleted subject) and, when
        `existing_style_keys` is given, styles whose key is no longer current. Returns the evicted keys."""
        adapter_ids = set(existing_adapter_ids)
        style_keys = None if existing_style_keys is None else set(existing_style_keys)
        gone = [
            key for key, entry in self._resident.items()
            if (entry.source.adapter_id is not None and entry.source.adapter_id not in adapter_ids)
            or (entry.source.style_id is not None and style_keys is not None and key not in style_keys)
        ]
        for key in gone:
            self.evict(key)
        return gone

    def clear(self) -> None:
        for key in list(self._resident):
            self.evict(key)

    def _trim(self, protected: set[str]) -> None:
        budget = self.budget_mb * 2**20
        while self._bytes > budget:
            victim = next((key for key in self._resident if key not in protected), None)
            if victim is None:
                return
            self.evict(victim)


def _verify(source: AdapterSource) -> None:
    if not source.path.is_file():
        raise AdapterFileError(f"{source.key}: file missing")
    if source.sha256 is not None and sha256_file(source.path) != source.sha256:
        raise AdapterFileError(f"{source.key}: sha256 does not match its row")
