"""The hashes that A1111 and Civitai show: a LoRA's SHA-256 of its tensor data (after the header), and a checkpoint's
short hash.

A safetensors file is an 8-byte little-endian header length, a JSON header (tensor names, shapes and offsets, plus
free-form metadata), then the tensor bytes. Hashing only the bytes after the header makes the hash depend on the
weights alone: identical weights hash the same whatever the metadata says and in whatever order its keys were
written. A1111 calls this its "addnet" hash and shows the first 12 hex digits (`Lora hashes` in PNG metadata);
Civitai lists the full digest as AutoV3. The whole-file SHA-256 kept on each adapter row stays what it was: the
integrity check of the stored file.

The file A1111 and ComfyUI load is the kohya copy beside the diffusers file (SD 1.5 and SDXL; FLUX has none), so
that is the file whose hash the PNGs name (`a1111_lora_file`). A base model's `Model hash` is A1111's: the first
10 hex digits of the SHA-256 of the whole checkpoint file; a diffusers folder or hub id has none.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

HEADER_LENGTH_BYTES = 8
SHORT_HASH_CHARS = 12
MODEL_HASH_CHARS = 10
KOHYA_FILE_NAME = "lora_kohya.safetensors"  # beside pytorch_lora_weights.safetensors in an adapter's folder
_CHUNK = 1 << 20


class NotSafetensorsError(ValueError):
    """The file is too short, or its header length points past its end."""


def lora_hash(path: Path | str) -> str:
    """The full hex digest of the tensor data of the safetensors file at `path`."""
    with open(path, "rb") as handle:
        prefix = handle.read(HEADER_LENGTH_BYTES)
        size = os.fstat(handle.fileno()).st_size
        if len(prefix) < HEADER_LENGTH_BYTES:
            raise NotSafetensorsError(f"{Path(path).name}: too short to be a safetensors file")
        header_length = int.from_bytes(prefix, "little")
        if header_length > size - HEADER_LENGTH_BYTES:
            raise NotSafetensorsError(f"{Path(path).name}: its header length runs past the end of the file")
        handle.seek(HEADER_LENGTH_BYTES + header_length)
        digest = hashlib.sha256()
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def short_lora_hash(full_hash: str) -> str:
    """The 12 hex digits A1111 shows."""
    return full_hash[:SHORT_HASH_CHARS]


@lru_cache(maxsize=256)
def _cached(path: str, file_sha256: str) -> str:
    return lora_hash(path)


def lora_hash_of_stored(path: Path | str, file_sha256: str | None) -> str:
    """lora_hash, remembered per file content (the whole-file SHA-256 names it), so serving hashes each file once."""
    if not file_sha256:
        return lora_hash(path)
    return _cached(str(path), file_sha256)


def a1111_lora_file(adapter_path: Path | str) -> Path:
    """The file A1111 and ComfyUI load for an adapter: its kohya copy when it has one, else the file itself."""
    path = Path(adapter_path)
    kohya = path.with_name(KOHYA_FILE_NAME)
    return kohya if kohya.is_file() else path


@lru_cache(maxsize=8)
def _checkpoint_hash(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()[:MODEL_HASH_CHARS]


def checkpoint_short_hash(model_path: Path | str | None) -> str | None:
    """A1111's `Model hash` of a single-file checkpoint; None for a diffusers folder, a hub id or nothing."""
    if not model_path:
        return None
    path = Path(model_path).expanduser()
    try:
        stat = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return _checkpoint_hash(str(path), stat.st_size, stat.st_mtime_ns)
