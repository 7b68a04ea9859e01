"""The file store: photos, adapters, previews and outputs under one root.

Every write goes to a temp file in the target directory, is fsynced, then renamed over the target, so a crash or a
full disk never leaves a truncated file under a real name. Paths are built only from ids, hex digests and fixed
names (see the key functions below); `resolve` rejects anything else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]{8,128}$")
_TEMP_MARK = ".tmp-"
IMAGE_EXTENSIONS = ("png", "jpg", "webp")


class UnsafePathError(ValueError):
    """A store path that could escape the root or was not built by the key functions."""


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; when the block succeeds, fsync the file and rename it into place.
    A crash leaves the old file or the new one, never half of one; a failure leaves no temp file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}{_TEMP_MARK}{uuid.uuid4().hex[:8]}")
    try:
        yield temp
        with open(temp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, target)
        fsync_dir(target.parent)
    finally:
        temp.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FileStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    # Paths.
    def resolve(self, rel: str) -> Path:
        parts = rel.split("/")
        if not rel or any(not _SAFE_PART.match(part) or part in (".", "..") for part in parts):
            raise UnsafePathError(f"unsafe store path: {rel!r}")
        path = self.root.joinpath(*parts)
        if self.root not in path.parents:
            raise UnsafePathError(f"store path escapes the root: {rel!r}")
        return path

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def exists(self, rel: str) -> bool:
        return self.resolve(rel).exists()

    # Writing.
    @contextmanager
    def writing(self, rel: str) -> Iterator[Path]:
        """Yield a temp path next to `rel`; on success fsync it and rename it into place."""
        with atomic_path(self.resolve(rel)) as temp:
            yield temp

    def write_bytes(self, rel: str, data: bytes) -> str:
        with self.writing(rel) as temp:
            with open(temp, "wb") as fh:
                fh.write(data)
        return rel

    @contextmanager
    def writing_dir(self, rel: str) -> Iterator[Path]:
        """Yield a temp directory; on success fsync its files and rename it over `rel` as a whole."""
        target = self.resolve(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}{_TEMP_MARK}{uuid.uuid4().hex[:8]}")
        temp.mkdir()
        try:
            yield temp
            for file in temp.rglob("*"):
                if file.is_file():
                    with open(file, "rb+") as fh:
                        os.fsync(fh.fileno())
            if target.exists():
                shutil.rmtree(target)
            os.replace(temp, target)
            fsync_dir(target.parent)
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)

    def import_file(self, source: Path, rel: str) -> str:
        """Copy a file produced elsewhere (e.g. by the trainer) into the store atomically."""
        with self.writing(rel) as temp:
            shutil.copyfile(source, temp)
        return rel

    # Reading and deleting.
    def read_bytes(self, rel: str) -> bytes:
        return self.resolve(rel).read_bytes()

    def size(self, rel: str) -> int:
        return self.resolve(rel).stat().st_size

    def sha256(self, rel: str) -> str:
        return sha256_file(self.resolve(rel))

    def delete(self, rel: str) -> None:
        """Remove a file or a whole tree; a missing path is not an error (deletion is retried by sweeps)."""
        path = self.resolve(rel)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def list_files(self, rel: str = "") -> list[str]:
        base = self.resolve(rel) if rel else self.root
        if not base.exists():
            return []
        return sorted(self.relative(p) for p in base.rglob("*") if p.is_file())

    def sweep_temp_files(self, older_than_s: float = 3600) -> int:
        """Remove temp files and dirs that a crash left behind."""
        cutoff, removed = time.time() - older_than_s, 0
        for path in list(self.root.rglob(f"*{_TEMP_MARK}*")):
            if path.exists() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
                removed += 1
        return removed


# Keys: the only way paths are made. Arguments are ids and digests, never user text.
def _uid(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnsafePathError(f"not an id: {value!r}")
    return str(value)


def _hex(value: str) -> str:
    if not isinstance(value, str) or not _HEX.match(value):
        raise UnsafePathError(f"not a hex digest: {value!r}")
    return value


def _ext(value: str) -> str:
    if value not in IMAGE_EXTENSIONS:
        raise UnsafePathError(f"not an image extension: {value!r}")
    return value


def user_root(user_id: int) -> str:
    return f"users/{_uid(user_id)}"


def subject_root(user_id: int, subject_id: int) -> str:
    return f"{user_root(user_id)}/subjects/{_uid(subject_id)}"


def photo_original_key(user_id: int, subject_id: int, sha256: str, ext: str) -> str:
    return f"{subject_root(user_id, subject_id)}/originals/{_hex(sha256)}.{_ext(ext)}"


def photo_crop_key(user_id: int, subject_id: int, sha256: str) -> str:
    return f"{subject_root(user_id, subject_id)}/crops/{_hex(sha256)}.png"


def job_root(user_id: int, job_id: int) -> str:
    return f"{user_root(user_id)}/jobs/{_uid(job_id)}"


def adapter_root(user_id: int, job_id: int) -> str:
    return f"{user_root(user_id)}/adapters/{_uid(job_id)}"


def generation_root(user_id: int, generation_id: int) -> str:
    return f"{user_root(user_id)}/generations/{_uid(generation_id)}"


def export_key(user_id: int, export_id: int) -> str:
    return f"{user_root(user_id)}/exports/{_uid(export_id)}.zip"


def style_key(sha256: str) -> str:
    return f"styles/{_hex(sha256)}.safetensors"
