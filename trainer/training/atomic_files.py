"""Writing files so that a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from storage.files import atomic_path, fsync_dir

__all__ = ["fsync_dir", "fsync_file", "write_atomically", "write_bytes_atomically"]


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call write(temp_path) for a temp file beside `path`, fsync it and rename it into place."""
    path = Path(path)
    with atomic_path(path) as temp:
        write(temp)
    return path


def write_bytes_atomically(path: Path, data: bytes) -> Path:
    return write_atomically(path, lambda temp: temp.write_bytes(data))
