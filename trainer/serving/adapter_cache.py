"""LoRA adapters resident on one base pipeline: loaded by name, kept in LRU order, evicted past a bound.

Adapters are peft layers next to the frozen base weights (never fused), so switching users is `set_adapters` with
other names and weights; the base model is never reloaded or modified.

Eviction. When the cache is full and the new adapter has the same LoRA layout as the least recently used one
(same keys and shapes, same rank/alpha config, denoiser only: what our trainer writes for every subject of a
family), the new weights are copied into the old adapter's layers with diffusers' hotswap
(`load_lora_weights(..., hotswap=True)`). That skips peft's module injection (the slow part of a load on a real
UNet), allocates nothing, and keeps the module graph fixed, which a `torch.compile`d denoiser needs. Other
adapters (text-encoder LoRA, kohya-format style files, another rank) are evicted with `delete_adapters` and
loaded fresh. `evict`/`evict_missing` always delete, so a forgotten person's weights leave memory at once.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from storage.files import sha256_file

log = logging.getLogger(__name__)

# LoRA config fields that change what the same tensors compute; hotswap needs them equal.
_LAYOUT_CONFIG_FIELDS = ("r", "lora_alpha", "alpha_pattern", "rank_pattern", "use_rslora", "use_dora",
                         "lora_dropout", "lora_bias", "target_modules")


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
    """An adapter file that is missing, damaged, or not what its row says it is."""


@dataclass
class CacheStats:
    loads: int = 0  # fresh loads (peft injection)
    hotswaps: int = 0  # loads into an evicted adapter's layers
    hits: int = 0
    evictions: int = 0
    deletions: int = 0  # delete_adapters calls


@dataclass
class _Slot:
    name: str  # the adapter_name inside the pipeline
    source: AdapterSource
    layout: str | None  # None: never hotswap into or out of this slot


@dataclass
class AdapterCache:
    pipe: object
    capacity: int
    denoiser_prefix: str = "unet"
    hotswap: bool = True
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("the adapter cache needs room for at least one adapter")
        self._slots: OrderedDict[str, _Slot] = OrderedDict()  # key -> slot, least recently used first
        self._counter = 0

    # Queries.
    def __contains__(self, key: str) -> bool:
        return key in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def keys(self) -> list[str]:
        """Cached keys, least recently used first."""
        return list(self._slots)

    def name_of(self, key: str) -> str:
        return self._slots[key].name

    # Loading.
    def ensure(self, sources: Sequence[AdapterSource]) -> list[str]:
        """Make every source resident (most recently used now) and return their adapter names, in order.

        Adapters needed by this call are never evicted by it; if one request needs more adapters than the cache
        holds, the cache stays over its bound until the next call trims it.
        """
        needed = {source.key for source in sources}
        names = []
        for source in sources:
            slot = self._slots.get(source.key)
            if slot is not None:
                self._slots.move_to_end(source.key)
                self.stats.hits += 1
            else:
                slot = self._load(source, protected=needed)
            names.append(slot.name)
        self._trim(protected=needed)
        return names

    def _load(self, source: AdapterSource, protected: set[str]) -> _Slot:
        _verify(source)
        layout = lora_layout(source.path, self.denoiser_prefix) if self.hotswap else None
        if len(self._slots) >= self.capacity:
            victim_key = self._least_recent(protected)
            if victim_key is not None:
                victim = self._slots[victim_key]
                if layout is not None and victim.layout == layout:
                    return self._hotswap_into(victim_key, source, layout)
                self.evict(victim_key)
        self._counter += 1
        name = f"lk{self._counter}"
        self._load_weights(source.path, name, hotswap=False)
        self.stats.loads += 1
        slot = _Slot(name, source, layout)
        self._slots[source.key] = slot
        return slot

    def _hotswap_into(self, victim_key: str, source: AdapterSource, layout: str) -> _Slot:
        victim = self._slots.pop(victim_key)
        self.stats.evictions += 1
        try:
            self._load_weights(source.path, victim.name, hotswap=True)
        except Exception as error:  # a half-copied adapter must not survive under any name
            log.warning("hotswap into %s failed (%s); loading %s fresh", victim.name, error, source.key)
            self._delete(victim.name)
            self._counter += 1
            victim = _Slot(f"lk{self._counter}", source, layout)
            self._load_weights(source.path, victim.name, hotswap=False)
            self.stats.loads += 1
        else:
            self.stats.hotswaps += 1
        slot = _Slot(victim.name, source, layout)
        self._slots[source.key] = slot
        return slot

    def _load_weights(self, path: Path, name: str, hotswap: bool) -> None:
        path = Path(path)
        self.pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name, hotswap=hotswap)

    # Activation.
    def activate(self, names: Sequence[str], weights: Sequence[float]) -> None:
        """Compose exactly these adapters with these weights; an empty list turns LoRA off (the base model)."""
        if not names:
            if self._slots:
                self.pipe.disable_lora()
            return
        self.pipe.enable_lora()
        self.pipe.set_adapters(list(names), adapter_weights=[float(w) for w in weights])

    # Eviction.
    def evict(self, key: str) -> bool:
        slot = self._slots.pop(key, None)
        if slot is None:
            return False
        self._delete(slot.name)
        self.stats.evictions += 1
        return True

    def evict_missing(self, existing_adapter_ids: Iterable[int],
                      existing_style_keys: Iterable[str] | None = None) -> list[str]:
        """Drop cached adapters whose adapter row is gone (a forgotten user, a deleted subject) and, when
        `existing_style_keys` is given, styles whose key is no longer current. Returns the evicted keys."""
        adapter_ids = set(existing_adapter_ids)
        style_keys = None if existing_style_keys is None else set(existing_style_keys)
        gone = [
            key for key, slot in self._slots.items()
            if (slot.source.adapter_id is not None and slot.source.adapter_id not in adapter_ids)
            or (slot.source.style_id is not None and style_keys is not None and key not in style_keys)
        ]
        for key in gone:
            self.evict(key)
        return gone

    def cached_adapter_ids(self) -> list[int]:
        return [s.source.adapter_id for s in self._slots.values() if s.source.adapter_id is not None]

    def clear(self) -> None:
        for key in list(self._slots):
            self.evict(key)

    def _delete(self, name: str) -> None:
        self.pipe.delete_adapters([name])
        self.stats.deletions += 1

    def _least_recent(self, protected: set[str]) -> str | None:
        return next((key for key in self._slots if key not in protected), None)

    def _trim(self, protected: set[str]) -> None:
        while len(self._slots) > self.capacity:
            victim = self._least_recent(protected)
            if victim is None:
                return
            self.evict(victim)


def _verify(source: AdapterSource) -> None:
    if not source.path.is_file():
        raise AdapterFileError(f"{source.key}: file missing")
    if source.sha256 is not None and sha256_file(source.path) != source.sha256:
        raise AdapterFileError(f"{source.key}: sha256 does not match its row")


def lora_layout(path: Path, denoiser_prefix: str) -> str | None:
    """A fingerprint of what a LoRA file's tensors mean (keys, shapes, rank/alpha config), or None when the file
    cannot be hotswapped: text-encoder weights, kohya alpha tensors, or no peft config in its metadata."""
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        keys = sorted(handle.keys())
        metadata = handle.metadata() or {}
        if any(not key.startswith(denoiser_prefix + ".") or key.endswith(".alpha") for key in keys):
            return None
        shapes = [(key, list(handle.get_slice(key).get_shape())) for key in keys]
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except ValueError:
        return None
    wanted = {f"{denoiser_prefix}.{name}": config.get(f"{denoiser_prefix}.{name}") for name in _LAYOUT_CONFIG_FIELDS}
    if isinstance(wanted.get(f"{denoiser_prefix}.target_modules"), list):
        wanted[f"{denoiser_prefix}.target_modules"] = sorted(wanted[f"{denoiser_prefix}.target_modules"])
    return json.dumps([shapes, wanted], sort_keys=True)
