"""OS file locks per data directory: one Likeness (bot or console) and one worker each, and tools that know it.

- `likeness.lock` (the instance lock) is held by the bot or console process for its whole life, whatever its worker
  mode, and by `restore`, `backup` and `verify` while they run. A second bot or console is refused at once with
  one line naming the holder; a restore refuses while anything holds it (or the worker lock).
- `worker.lock` is held by the one process that runs jobs: the local worker (a subprocess, or the console's
  `--worker thread`) or the cluster dispatcher.

flock locks belong to the open file, and the kernel drops them when the holder dies, however it dies: a crashed
process never leaves a stale lock behind. The descriptor is not inherited by child processes. On systems without
fcntl the locks are not enforced.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None  # type: ignore[assignment]

WORKER_LOCK = "worker.lock"
INSTANCE_LOCK = "likeness.lock"
# The supervisor's pid, handed to the worker so it can tell whether its parent already died (not a setting).
SUPERVISOR_PID_ENV = "LIKENESS_SUPERVISOR_PID"
# A worker (or dispatcher) that finds the worker lock taken exits with this status; its supervisor then waits.
WORKER_LOCKED_EXIT_CODE = 3
# Roles written into the instance lock that are short tools rather than a running Likeness.
TOOL_ROLES = ("backup", "verify", "restore")


class DataDirLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, role: str = "") -> bool:
        """Take the lock without waiting; False when another process holds it. `role` says who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
        try:  # who holds it, for the refusal message only: a full disk must not stop the lock itself
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {role}".strip().encode())
        except OSError:
            pass
        self._fd = fd
        return True

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def _content(self) -> list[str]:
        try:
            return self.path.read_text().split(maxsplit=1)
        except (OSError, ValueError):
            return []

    def holder_pid(self) -> int | None:
        """The pid written by whoever took the lock last (for the message only)."""
        parts = self._content()
        return int(parts[0]) if parts and parts[0].isdigit() and int(parts[0]) else None

    def holder_role(self) -> str:
        parts = self._content()
        return parts[1].strip() if len(parts) > 1 else ""

    def describe_holder(self) -> str:
        """'the console (pid 1234)', as far as the lock file tells."""
        pid, role = self.holder_pid(), self.holder_role()
        what = f"the {role}" if role else "another process"
        return f"{what} (pid {pid})" if pid else what


def worker_lock(data_dir: Path) -> DataDirLock:
    return DataDirLock(Path(data_dir) / WORKER_LOCK)


def instance_lock(data_dir: Path) -> DataDirLock:
    return DataDirLock(Path(data_dir) / INSTANCE_LOCK)


class DataDirBusy(Exception):
    """Another process holds the data directory; the message is one line naming it."""


def hold_instance(data_dir: Path, role: str) -> DataDirLock:
    """The instance lock for `role` (console, Discord bot, backup...), or DataDirBusy naming who has it."""
    lock = instance_lock(data_dir)
    if lock.acquire(role):
        return lock
    where = Path(data_dir).resolve()
    holder = lock.describe_holder()
    if lock.holder_role() in TOOL_ROLES:
        raise DataDirBusy(f"{holder} is using {where}; try again when it has finished.")
    raise DataDirBusy(f"Likeness is already running on {where}: {holder}. Stop it first, or give this one "
                      f"another LIKENESS_DATA_DIR.")


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
