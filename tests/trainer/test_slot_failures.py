"""A LoRA slot whose copy fails midway claims no adapter afterwards, and holds zeros rather than a mix of two."""

from __future__ import annotations

import pytest
import torch

from trainer.serving.lora_slots import Slot, SlotBank, _Layer
from trainer.serving.lora_tensors import LoraModule, LoraTensors

KEYS = [("unet", "a"), ("unet", "b")]


class FakeLayer:
    """Just what a slot touches on a peft LoraLayer: its scaling per adapter name."""

    def __init__(self) -> None:
        self.scaling = {"lkslot0": 1.0}


def _tensors(seed: int, bad_second: bool = False) -> LoraTensors:
    generator = torch.Generator().manual_seed(seed)
    modules = {}
    for index, key in enumerate(KEYS):
        width = 9 if bad_second and index == 1 else 8  # a module that no longer fits the slot's layer
        modules[key] = LoraModule(torch.randn(4, width, generator=generator), torch.randn(8, 4, generator=generator),
                                  alpha=4.0, rslora=False)
    return LoraTensors(modules)


def _bank() -> SlotBank:
    slot = Slot("lkslot0", {key: _Layer(FakeLayer(), torch.zeros(4, 8), torch.zeros(8, 4)) for key in KEYS})
    return SlotBank(pipe=None, components={}, slots=[slot])


def test_a_failed_copy_leaves_the_slot_empty_and_zeroed_not_claiming_its_old_adapter():
    bank = _bank()
    slot = bank.slots[0]
    slot.fill("ann", _tensors(1), 1.0)
    assert bank.slot_of("ann") == "lkslot0" and slot.layers[KEYS[0]].down.abs().sum() > 0
    with pytest.raises(RuntimeError):
        slot.fill("bob", _tensors(2, bad_second=True), 1.0)  # the first module copies, the second fails
    assert slot.held is None
    assert bank.slot_of("ann") is None and bank.slot_of("bob") is None
    assert all(entry.down.abs().sum() == 0 and entry.up.abs().sum() == 0 for entry in slot.layers.values())
    slot.fill("ann", _tensors(1), 1.0)  # the next request for ann copies her in again
    assert bank.slot_of("ann") == "lkslot0"
    assert torch.equal(slot.layers[KEYS[1]].down, _tensors(1).modules[KEYS[1]].down)
