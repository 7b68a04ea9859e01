"""Checking an uploaded style LoRA without torch: the `safetensors` library parses it (header, dtypes, offsets that
cover the data exactly once, no overlapping tensors); we then ask that it holds LoRA weights."""

from __future__ import annotations

from dataclasses import dataclass

from safetensors import SafetensorError, deserialize

from bot.services.errors import ServiceError

MAX_STYLE_BYTES = 1024 * 1024 * 1024  # 1 GiB: SDXL LoRAs of high rank reach a few hundred MiB
_LORA_MARKERS = ("lora_a", "lora_b", "lora_up", "lora_down", "lora.up", "lora.down")
# What safetensors' error says (a fragment) -> the reason we give, in plain words.
_REASONS = (
    ("header too small", "it is too short"),
    ("header too large", "its header length is wrong, so it is truncated or another format"),
    ("invalid json", "its header is not valid JSON describing tensors"),
    ("not fully covered", "its tensors do not match its data section (truncated, padded or overlapping)"),
    ("invalid offset", "its tensors do not match its data section (truncated, padded or overlapping)"),
    ("metadata", "its tensors do not match its data section (truncated, padded or overlapping)"),
)


@dataclass(frozen=True)
class SafetensorsSummary:
    tensors: int
    lora_tensors: int
    data_bytes: int


def _bad(reason: str) -> ServiceError:
    return ServiceError("bad_style_file", f"That is not a usable LoRA .safetensors file: {reason}.")


def _reason(error: SafetensorError) -> str:
    said = str(error).lower()
    return next((reason for fragment, reason in _REASONS if fragment in said), "the safetensors library cannot read it")


def inspect_safetensors(data: bytes) -> SafetensorsSummary:
    """Parse the file with safetensors; it must hold at least one LoRA tensor."""
    if len(data) > MAX_STYLE_BYTES:
        raise ServiceError("style_too_large", f"Style files can be at most {MAX_STYLE_BYTES // 2**20} MiB.")
    try:
        tensors = deserialize(data)
    except SafetensorError as error:
        raise _bad(_reason(error)) from None
    if not tensors:
        raise _bad("it holds no tensors")
    lora = sum(1 for name, _ in tensors if any(marker in name.lower() for marker in _LORA_MARKERS))
    if lora == 0:
        raise _bad("it has no LoRA weights (no lora_A/lora_B or lora_up/lora_down tensors), so it is not a LoRA")
    return SafetensorsSummary(tensors=len(tensors), lora_tensors=lora,
                              data_bytes=sum(len(tensor["data"]) for _, tensor in tensors))
