"""A fixed set of LoRA slots on a resident pipeline: adapters are copied into them in place, never loaded.

A slot is one peft LoRA adapter, created through diffusers (`load_lora_weights` of zero weights) on the modules
and at the ranks of the adapters it holds. Switching a slot to another adapter copies that adapter's tensors into
the slot's weights (zero where the adapter has no module) and sets each layer's scaling to what peft's
`set_scale` gives for that adapter and weight. No peft layer is created or deleted, no base weight is touched, and
the cost depends on the slot's layers, not on how many adapters wait in memory. peft's own
`hotswap_adapter_from_state_dict` does the same copy but walks the whole model's `state_dict()` on every call (as
long as `set_adapters` with 8 adapters resident, on the tiny UNet), so a slot keeps references to its layers.

Eager (the default off CUDA): a slot takes only adapters of its exact ranks, because zero-padding a smaller rank
changes the float summation order and so a grey level here and there; only the slots in use are active, in
request order, so a picture equals a fresh `load_lora_weights` + `set_adapters` bit for bit. Compiled: slots are
padded to the largest rank seen (at least `min_rank`, as diffusers' `enable_lora_hotswap(target_rank=...)` does),
every slot stays active in a fixed order, scalings are tensors (peft's `prepare_model_for_compiled_hotswap`)
filled in place, and an unused slot is zeroed, so no switch recompiles. A slot is built or widened only when no
free slot can take an adapter; compiled, that is the one moment the denoiser recompiles.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers.utils import logging as diffusers_logging
from peft.tuners.lora import LoraLayer
from peft.utils.hotswap import prepare_model_for_compiled_hotswap
from transformers.utils import logging as transformers_logging

from trainer.serving.lora_tensors import LoraTensors, ModuleKey

log = logging.getLogger(__name__)

SLOT_PREFIX = "lkslot"
# Eager slots keep each adapter's own ranks (zero-padding a smaller rank changes the float summation order, so the
# picture would differ from a fresh load by a grey level here and there); so up to this many slots of different
# layouts are kept before a free one is rebuilt. Inactive slots cost memory only, no compute.
EAGER_SLOT_LIMIT = 8


@dataclass
class _Layer:
    layer: LoraLayer
    down: torch.Tensor  # the slot's lora_A weight
    up: torch.Tensor  # the slot's lora_B weight


@dataclass
class Slot:
    name: str
    layers: dict[ModuleKey, _Layer]
    held: tuple[str, float] | None = None  # (adapter key, weight) now in the slot; None: zeroed
    last_used: int = 0

    def shapes(self) -> dict[ModuleKey, tuple[torch.Size, torch.Size]]:
        return {key: (entry.down.shape, entry.up.shape) for key, entry in self.layers.items()}

    def fits(self, tensors: LoraTensors, exact: bool) -> bool:
        """Every module of `tensors` has a layer here of at least its rank (`exact`: of its very rank)."""
        for key, module in tensors.modules.items():
            entry = self.layers.get(key)
            if entry is None or entry.down.shape[0] < module.rank or entry.up.shape[1] < module.rank:
                return False
            if exact and entry.down.shape[0] != module.rank:
                return False
            if entry.down.shape[1:] != module.down.shape[1:] or entry.up.shape[0] != module.up.shape[0]:
                return False
        return True

    @torch.no_grad()
    def fill(self, key: str, tensors: LoraTensors, weight: float) -> None:
        """Copy `tensors` into the slot; modules it lacks are zeroed. The slot claims no adapter while it is half
        copied, and a copy that fails midway zeroes it: it never poses as its old adapter, nor draws a mix."""
        self.held = None
        try:
            for module_key, entry in self.layers.items():
                self._copy_module(entry, tensors.modules.get(module_key))
            self.rescale(key, tensors, weight)
        except BaseException:
            self.zero()
            raise

    @staticmethod
    def _copy_module(entry: _Layer, module) -> None:
        if module is None:
            entry.down.zero_()
            entry.up.zero_()
            return
        rank = module.rank
        if rank == entry.down.shape[0]:
            entry.down.copy_(module.down, non_blocking=True)
            entry.up.copy_(module.up, non_blocking=True)
        else:
            entry.down.zero_()
            entry.up.zero_()
            entry.down[:rank].copy_(module.down, non_blocking=True)
            entry.up[:, :rank].copy_(module.up, non_blocking=True)

    def rescale(self, key: str, tensors: LoraTensors, weight: float) -> None:
        self.held = None  # until every scaling is set
        for module_key, module in tensors.modules.items():
            _set_scaling(self.layers[module_key].layer, self.name, module.scale(weight))
        self.held = (key, weight)

    @torch.no_grad()
    def zero(self) -> None:
        for entry in self.layers.values():
            entry.down.zero_()
            entry.up.zero_()
        self.held = None


def _set_scaling(layer: LoraLayer, name: str, value: float) -> None:
    current = layer.scaling[name]
    if isinstance(current, torch.Tensor):  # compiled: filled in place, so no guard sees a new value
        current.fill_(value)
    else:
        layer.scaling[name] = value


@dataclass
class SlotStats:
    fills: int = 0  # adapters copied into a slot
    rescales: int = 0  # same adapter, new weight
    builds: int = 0  # slots created or widened (a recompile when compiled)


@dataclass
class SlotBank:
    pipe: object
    components: Mapping[str, torch.nn.Module]  # denoiser and text encoders, by pipeline attribute name
    compiled: bool = False
    min_rank: int = 0
    slots: list[Slot] = field(default_factory=list)
    stats: SlotStats = field(default_factory=SlotStats)

    def __post_init__(self) -> None:
        self._clock = 0
        self._active: list[str] | None = None  # None: unknown, set it on the next request
        self._layers: list[LoraLayer] = []  # every LoRA layer of the components, found after each build

    def place(self, uses: Sequence[tuple[str, LoraTensors, float]]) -> list[str]:
        """Put these adapters (key, tensors, weight) into slots and make exactly them active, in this order."""
        self._clock += 1
        chosen: list[Slot | None] = [self._holding(key) for key, _, _ in uses]
        for index, (key, tensors, weight) in enumerate(uses):
            slot = chosen[index]
            if slot is not None and not slot.fits(tensors, exact=not self.compiled):
                slot = None  # the same key cannot change shape, but be safe
            if slot is None:
                slot = self._free_slot(tensors, busy=[s for s in chosen if s is not None])
                chosen[index] = slot
            self._load(slot, key, tensors, weight)
            slot.last_used = self._clock
        names = [slot.name for slot in chosen if slot is not None]
        self._activate(names)
        return names

    def slot_of(self, key: str) -> str | None:
        slot = self._holding(key)
        return None if slot is None else slot.name

    def drop(self, key: str) -> None:
        """Zero the slot holding `key` (a forgotten adapter's weights leave the model at once)."""
        slot = self._holding(key)
        if slot is not None:
            slot.zero()

    def forget_active(self) -> None:
        """After a failed placement: set the active slots again on the next request."""
        self._active = None

    def active(self) -> list[str]:
        return list(self._active or [])

    # Internals.
    def _holding(self, key: str) -> Slot | None:
        return next((slot for slot in self.slots if slot.held is not None and slot.held[0] == key), None)

    def _load(self, slot: Slot, key: str, tensors: LoraTensors, weight: float) -> None:
        if slot.held == (key, weight):
            return
        if slot.held is not None and slot.held[0] == key:
            slot.rescale(key, tensors, weight)
            self.stats.rescales += 1
            return
        slot.fill(key, tensors, weight)
        self.stats.fills += 1

    def _free_slot(self, tensors: LoraTensors, busy: list[Slot]) -> Slot:
        free = sorted((s for s in self.slots if all(s is not b for b in busy)), key=lambda s: s.last_used)
        for slot in free:
            if slot.fits(tensors, exact=not self.compiled):
                return slot
        if free and (self.compiled or len(self.slots) >= EAGER_SLOT_LIMIT):  # rebuild the least recent free one
            shapes = _union(free[0].shapes(), tensors.shapes()) if self.compiled else tensors.shapes()
            return self._build(free[0].name, shapes, replace=free[0])
        return self._build(f"{SLOT_PREFIX}{len(self.slots)}", tensors.shapes())

    def _build(self, name: str, shapes: dict, replace: Slot | None = None) -> Slot:
        if replace is not None:
            self.pipe.delete_adapters([name])
            self.slots.remove(replace)
        template = {}
        for (component, module), (down, up) in shapes.items():
            rank = max(down[0], self.min_rank) if self.compiled else down[0]
            template[f"{component}.{module}.lora_A.weight"] = torch.zeros((rank, *down[1:]))
            template[f"{component}.{module}.lora_B.weight"] = torch.zeros((up[0], rank, *up[2:]))
        with _quiet_loaders():  # transformers reports the zero template's text-encoder keys as "missing"
            self.pipe.load_lora_weights(template, adapter_name=name)
        layers = {}
        for component, model in self.components.items():
            for path, module in model.named_modules():
                if isinstance(module, LoraLayer) and name in module.lora_A:
                    layers[(component, path)] = _Layer(module, module.lora_A[name].weight, module.lora_B[name].weight)
        slot = Slot(name, layers)
        self.slots.append(slot)
        self.stats.builds += 1
        self._active = None
        self._layers = [m for model in self.components.values() for m in model.modules() if isinstance(m, LoraLayer)]
        if self.compiled:
            for component in {key[0] for key in layers}:
                prepare_model_for_compiled_hotswap(self.components[component], check_compiled="ignore")
        log.info("LoRA slot %s %s: %d layers, ranks up to %d%s", name, "widened" if replace else "created",
                 len(layers), max(s[0][0] for s in shapes.values()), " (the denoiser recompiles once)"
                 if self.compiled else "")
        return slot

    def _activate(self, names: list[str]) -> None:
        if self.compiled:  # a fixed active set: unused slots are zeroed instead of switched off
            for slot in self.slots:
                if slot.name not in names and slot.held is not None:
                    slot.zero()
            names = [slot.name for slot in self.slots]
        if names == self._active:
            return
        for layer in self._layers:
            layer.set_adapter(names, inference_mode=True)
        self._active = names


@contextmanager
def _quiet_loaders():
    previous = (transformers_logging.get_verbosity(), diffusers_logging.get_verbosity())
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():  # peft: "Already found a `peft_config` attribute": slots are many adapters
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        transformers_logging.set_verbosity(previous[0])
        diffusers_logging.set_verbosity(previous[1])


def _union(first: dict, second: dict) -> dict:
    shapes = dict(first)
    for key, (down, up) in second.items():
        if key in shapes:
            old_down, old_up = shapes[key]
            rank = max(old_down[0], down[0])
            shapes[key] = (torch.Size((rank, *down[1:])), torch.Size((up[0], rank, *up[2:])))
        else:
            shapes[key] = (down, up)
    return shapes
