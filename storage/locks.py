"""An OS file lock per data directory, so only one worker serves it (and a restore knows Likeness is running).

flock locks belong to the open file, and the kernel drops them when the holder dies, however it dies: a crashed
worker never leaves a stale lock behind. On systems without fcntl the lock is not enforced.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

WORKER_LOCK = "worker.lock"
# The supervisor's pid, handed to the worker so it can tell whether its parent already died (not a setting).
SUPERVISOR_PID_ENV = "LIKENESS_SUPERVISOR_PID"


class DataDirLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def holder_pid(self) -> int | None:
        """The pid written by whoever took the lock last (for the message only)."""
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None


def worker_lock(data_dir: Path) -> DataDirLock:
    return DataDirLock(Path(data_dir) / WORKER_LOCK)


def is_held(lock_path: Path) -> bool:
    """Whether some process holds the lock right now (probing takes and drops it at once)."""
    if fcntl is None or not lock_path.exists():
        return False
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
