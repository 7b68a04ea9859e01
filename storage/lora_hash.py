"""The LoRA hash that A1111 and Civitai show: SHA-256 of a safetensors file's tensor data, after its header.

A safetensors file is an 8-byte little-endian header length, a JSON header (tensor names, shapes and offsets, plus
free-form metadata), then the tensor bytes. Hashing only the bytes after the header makes the hash depend on the
weights alone: identical weights hash the same whatever the metadata says and in whatever order its keys were
written. A1111 calls this its "addnet" hash and shows the first 12 hex digits (`Lora hashes` in PNG metadata);
Civitai lists the full digest as AutoV3. The whole-file SHA-256 kept on each adapter row stays what it was: the
integrity check of the stored file.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

HEADER_LENGTH_BYTES = 8
SHORT_HASH_CHARS = 12
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
