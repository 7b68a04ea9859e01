"""A LoRA file read into plain tensors, module by module, exactly as diffusers' `load_lora_weights` reads it.

The pipeline's own `lora_state_dict` parses the file (diffusers, peft and kohya formats, network alphas, the
`lora_adapter_metadata` our trainer writes); each component's keys then go through the same diffusers converters
and `get_peft_kwargs` that `load_lora_adapter` and `load_lora_into_text_encoder` use, so the rank and alpha of
every module, and so its scale, are the ones a fresh load would give. Nothing here touches the pipeline's modules.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft
from diffusers.utils.peft_utils import get_peft_kwargs
from peft import LoraConfig
from peft.utils.other import get_pattern_key

TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
_TEXT_RANK_MODULES = (".q_proj", ".k_proj", ".v_proj", ".out_proj", ".fc1", ".fc2")

ModuleKey = tuple[str, str]  # (component, module path inside it), e.g. ("unet", "down_blocks.0...to_q")


class UnsupportedLoraError(ValueError):
    """A file with keys the slots cannot hold (DoRA, LoKr, LoRA biases, embeddings)."""


@dataclass(frozen=True)
class LoraModule:
    down: torch.Tensor  # lora_A weight, rank first
    up: torch.Tensor  # lora_B weight, rank second
    alpha: float
    rslora: bool

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def scale(self, weight: float) -> float:
        """The layer's scaling for this adapter weight, computed as peft's `set_scale` computes it."""
        if self.rslora:
            return weight * self.alpha / math.sqrt(self.rank)
        return weight * self.alpha / self.rank


@dataclass(frozen=True)
class LoraTensors:
    modules: dict[ModuleKey, LoraModule]

    @property
    def nbytes(self) -> int:
        return sum(m.down.nbytes + m.up.nbytes for m in self.modules.values())

    def shapes(self) -> dict[ModuleKey, tuple[torch.Size, torch.Size]]:
        return {key: (m.down.shape, m.up.shape) for key, m in self.modules.items()}


def read_lora(pipe, path: Path, denoiser_name: str, pin: bool = False) -> LoraTensors:
    """Every LoRA module of the file, for the denoiser and the text encoders; pinned when `pin` (CUDA hosts)."""
    state_dict, network_alphas, metadata = _parse(pipe, Path(path))
    if not all("lora" in key for key in state_dict):
        raise UnsupportedLoraError("not a LoRA file: some keys are not LoRA weights")
    modules: dict[ModuleKey, LoraModule] = {}
    parts = [(denoiser_name, _denoiser_part(state_dict, network_alphas, metadata, denoiser_name))]
    parts += [(name, _text_encoder_part(state_dict, network_alphas, metadata, name, getattr(pipe, name)))
              for name in TEXT_ENCODERS if getattr(pipe, name, None) is not None]
    for component, (peft_dict, config) in parts:
        if peft_dict:
            modules.update(_modules(component, peft_dict, config, pin))
    if not modules:
        raise UnsupportedLoraError("no LoRA weights for this model family's denoiser or text encoders")
    return LoraTensors(modules)


def _parse(pipe, path: Path):
    extra = {"return_lora_metadata": True}
    if "return_alphas" in inspect.signature(pipe.lora_state_dict).parameters:  # FLUX
        extra["return_alphas"] = True
    state_dict, network_alphas, metadata = pipe.lora_state_dict(str(path.parent), weight_name=path.name, **extra)
    return state_dict, network_alphas, metadata


def _prefixed(mapping: dict | None, prefix: str) -> dict | None:
    if mapping is None:
        return None
    return {k.removeprefix(f"{prefix}."): v for k, v in mapping.items() if k.startswith(f"{prefix}.")}


def _denoiser_part(state_dict, network_alphas, metadata, prefix: str) -> tuple[dict, LoraConfig | None]:
    """As `PeftAdapterMixin.load_lora_adapter` converts its part."""
    part = _prefixed(state_dict, prefix)
    if not part:
        return {}, None
    if "lora_A" not in next(iter(part)):
        part = convert_unet_state_dict_to_peft(part)
    rank = {f"^{key}": value.shape[1] for key, value in part.items() if "lora_B" in key and value.ndim > 1}
    alphas = _prefixed(network_alphas, prefix) if network_alphas else network_alphas
    return part, _config(part, alphas, _prefixed(metadata, prefix), rank, is_unet=True)


def _text_encoder_part(state_dict, network_alphas, metadata, prefix: str,
                       text_encoder) -> tuple[dict, LoraConfig | None]:
    """As diffusers' `_load_lora_into_text_encoder` converts its part."""
    part = _prefixed(state_dict, prefix)
    if not part:
        return {}, None
    part = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
    if not hasattr(text_encoder, "text_model"):
        part = {k.removeprefix("text_model."): v for k, v in part.items()}
    rank = {}
    for name, _ in text_encoder.named_modules():
        if name.endswith(_TEXT_RANK_MODULES) and f"{name}.lora_B.weight" in part:
            rank[f"{name}.lora_B.weight"] = part[f"{name}.lora_B.weight"].shape[1]
    if network_alphas is not None:
        network_alphas = {k.removeprefix(f"{prefix}."): v for k, v in network_alphas.items()
                          if k.startswith(prefix) and k.split(".")[0] == prefix}
    return part, _config(part, network_alphas, _prefixed(metadata, prefix), rank, is_unet=False)


def _config(part: dict, alphas, metadata, rank: dict, is_unet: bool) -> LoraConfig:
    if metadata:
        return LoraConfig(**metadata)
    if not rank:
        raise UnsupportedLoraError("a LoRA part without any rank-2 lora_B weight")
    return LoraConfig(**get_peft_kwargs(rank, network_alpha_dict=alphas, peft_state_dict=part, is_unet=is_unet))


def _modules(component: str, part: dict, config: LoraConfig, pin: bool) -> dict[ModuleKey, LoraModule]:
    if config.use_dora or any(not key.endswith((".lora_A.weight", ".lora_B.weight")) for key in part):
        raise UnsupportedLoraError("uses a LoRA variant (DoRA, biases, embeddings) that cannot be swapped in place")
    modules = {}
    for key in part:
        if not key.endswith(".lora_A.weight"):
            continue
        name = key.removesuffix(".lora_A.weight")
        up = part.get(f"{name}.lora_B.weight")
        if up is None:
            raise UnsupportedLoraError(f"{component}.{name} has lora_A but no lora_B")
        alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), name), config.lora_alpha)
        modules[(component, name)] = LoraModule(_resident(part[key], pin), _resident(up, pin), float(alpha),
                                                bool(config.use_rslora))
    return modules


def _resident(tensor: torch.Tensor, pin: bool) -> torch.Tensor:
    tensor = tensor.detach().to("cpu").contiguous()
    return tensor.pin_memory() if pin else tensor
