"""A full disk, recognised in every form it takes, and free-space figures for the host's log.

Each library reports "no space" its own way: OSError errno 28, SQLite's SQLITE_FULL ("database or disk is full"),
safetensors' Rust error ("No space left on device (os error 28)"), torch's C++ stream error ("basic_ios::clear:
iostream error", "file write failed"). `is_disk_full` knows them all, so every layer can answer with one sentence.
"""

from __future__ import annotations

import errno
import logging
import shutil
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

DISK_FULL = "The server's disk is full; the host needs to free some space before this can run."
SQLITE_FULL = 13
SQLITE_IOERR = 10
_NO_SPACE_TEXTS = ("no space left on device", "os error 28", "database or disk is full", "disk quota exceeded")
# Messages that mean "a write failed" without saying why; they count as a full disk only when space is low.
_WRITE_FAILED_TEXTS = ("basic_ios::clear", "iostream error", "file write failed", "failed writing file",
                       "unexpected pos", "disk i/o error")
LOW_SPACE_BYTES = 64 * 1024 * 1024


class DiskFullError(OSError):
    """Raised where the code itself refuses for lack of space; `str()` is the user's sentence."""

    def __init__(self, message: str = DISK_FULL) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror or DISK_FULL


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _says_no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL:
        return True
    text = str(exc).lower()
    return any(part in text for part in _NO_SPACE_TEXTS)


def _says_write_failed(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == SQLITE_IOERR:
        return True
    text = str(exc).lower()
    return any(part in text for part in _WRITE_FAILED_TEXTS)


def is_disk_full(exc: BaseException, near: Path | str | None = None) -> bool:
    """True when `exc` (or what caused it) means the disk is full. A bare "write failed" counts when the disk
    holding `near` has less than LOW_SPACE_BYTES free."""
    chain = _chain(exc)
    if any(_says_no_space(item) for item in chain):
        return True
    if near is not None and any(_says_write_failed(item) for item in chain):
        return free_bytes(near) < LOW_SPACE_BYTES
    return False


def _existing(path: Path | str) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path | str) -> int:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return 0


def human_bytes(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def describe_free(path: Path | str) -> str:
    """'3.2 MiB free on /srv/likeness/data', for the host's log."""
    return f"{human_bytes(free_bytes(path))} free on {_existing(path)}"


def log_disk_full(where: str, path: Path | str, exc: BaseException | None = None) -> None:
    """One line for the host: what failed, and how much space there is."""
    detail = f" ({str(exc).strip().splitlines()[0][:200]})" if exc is not None and str(exc).strip() else ""
    log.error("%s: the disk is full; %s%s", where, describe_free(path), detail)


def check_free_space(path: Path | str, needed: int, what: str) -> None:
    """Refuse early when `what` needs more than is free: DiskFullError with both figures."""
    free = free_bytes(path)
    if free < needed:
        log.error("%s needs about %s but only %s", what, human_bytes(needed), describe_free(path))
        raise DiskFullError(
            f"The server's disk is too full for {what}: it needs about {human_bytes(needed)} and "
            f"{human_bytes(free)} is free. The host needs to free some space."
        )


def storage_failure(exc: BaseException, data_dir: Path | str) -> str:
    """One line for a process that must stop on a storage error (instead of a traceback)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if is_disk_full(exc, data_dir):
        return f"the disk is full ({describe_free(data_dir)}); free some space, then start Likeness again."
    if isinstance(exc, sqlite3.DatabaseError):
        return f"the database failed ({first}); check it with `./run-bot verify`."
    return f"a file operation failed ({first})."
