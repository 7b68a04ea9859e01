"""Checking an uploaded style LoRA without torch: a .safetensors file is an 8-byte little-endian header length,
a JSON header describing each tensor (dtype, shape, data_offsets), then the raw data."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

from bot.services.errors import ServiceError

MAX_STYLE_BYTES = 1024 * 1024 * 1024  # 1 GiB: SDXL LoRAs of high rank reach a few hundred MiB
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}
_LORA_MARKERS = ("lora_a", "lora_b", "lora_up", "lora_down", "lora.up", "lora.down")


@dataclass(frozen=True)
class SafetensorsSummary:
    tensors: int
    lora_tensors: int
    data_bytes: int


def _bad(reason: str) -> ServiceError:
    return ServiceError("bad_style_file", f"That is not a usable LoRA .safetensors file: {reason}.")


def _header(data: bytes) -> dict:
    if len(data) < 8:
        raise _bad("it is too short")
    (length,) = struct.unpack("<Q", data[:8])
    if length < 2 or length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise _bad("its header length is wrong, so it is truncated or another format")
    try:
        header = json.loads(data[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _bad("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _bad("its header is not a table of tensors")
    return header


def _tensor_size(name: str, info: object, data_bytes: int) -> tuple[int, int]:
    if not isinstance(info, dict):
        raise _bad(f"tensor {name[:60]!r} has no description")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    valid_shape = isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)
    valid_offsets = isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(n, int) for n in offsets)
    if dtype not in _DTYPE_BYTES or not valid_shape or not valid_offsets:
        raise _bad(f"tensor {name[:60]!r} has a malformed description")
    start, end = offsets
    if not 0 <= start <= end <= data_bytes or end - start != math.prod(shape) * _DTYPE_BYTES[dtype]:
        raise _bad(f"tensor {name[:60]!r} points outside the file")
    return start, end


def inspect_safetensors(data: bytes) -> SafetensorsSummary:
    """Parse and check the header; the file must hold LoRA tensors that exactly fill its data section."""
    if len(data) > MAX_STYLE_BYTES:
        raise ServiceError("style_too_large", f"Style files can be at most {MAX_STYLE_BYTES // 2**20} MiB.")
    header = _header(data)
    (length,) = struct.unpack("<Q", data[:8])
    data_bytes = len(data) - 8 - length
    tensors = {name: info for name, info in header.items() if name != "__metadata__"}
    if not tensors:
        raise _bad("it holds no tensors")
    ends = [_tensor_size(name, info, data_bytes)[1] for name, info in tensors.items()]
    if max(ends) != data_bytes:
        raise _bad("its data section does not match its header")
    lora = sum(1 for name in tensors if any(marker in name.lower() for marker in _LORA_MARKERS))
    if lora == 0:
        raise _bad("it has no LoRA weights (no lora_A/lora_B or lora_up/lora_down tensors), so it is not a LoRA")
    return SafetensorsSummary(tensors=len(tensors), lora_tensors=lora, data_bytes=data_bytes)
