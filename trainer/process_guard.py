"""The worker process never outlives its supervisor and never runs twice on one data directory.

Two ways to notice the parent's death, because neither works everywhere: Linux's parent-death signal
(prctl PR_SET_PDEATHSIG sends SIGTERM when the parent dies, however it dies), and a pipe on stdin that the parent
holds open and never writes, which reads end-of-file when the parent is gone (any POSIX system). Either way the
worker stops as on SIGTERM: it checkpoints and gives its job back. If it is still alive ORPHAN_GRACE_S later (stuck
loading a model, say) it exits hard; its job goes back to the queue when the lease runs out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from storage.locks import SUPERVISOR_PID_ENV, WORKER_LOCKED_EXIT_CODE, DataDirLock, worker_lock

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
ORPHAN_GRACE_S = 20.0
ORPHAN_EXIT_CODE = 70
LOCKED_EXIT_CODE = WORKER_LOCKED_EXIT_CODE  # the supervisor waits for the lock instead of restarting
STDIN_FD = 0


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `sig` when the parent dies. False elsewhere (the stdin pipe then does the job)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_if_still_running(grace_s: float) -> None:
    def hard_exit() -> None:
        log.error("the worker did not stop %.0fs after its parent died; exiting now", grace_s)
        os._exit(ORPHAN_EXIT_CODE)

    timer = threading.Timer(grace_s, hard_exit)
    timer.daemon = True
    timer.start()


def supervisor_pid() -> int | None:
    """The supervising process, when the worker was started by one (it then also holds our stdin pipe)."""
    value = os.environ.get(SUPERVISOR_PID_ENV, "")
    return int(value) if value.isdigit() else None


def watch_parent(parent_pid: int | None, *, watch_stdin: bool, grace_s: float = ORPHAN_GRACE_S) -> None:
    """When the parent dies (parent-death signal, stdin end-of-file, or already gone) this process gets SIGTERM,
    which the worker handles as a stop request, or which ends it at once before the handler is installed."""
    triggered = threading.Lock()

    def parent_gone(how: str) -> None:
        if not triggered.acquire(blocking=False):
            return
        log.warning("the worker's parent is gone (%s); stopping", how)
        _exit_if_still_running(grace_s)
        os.kill(os.getpid(), signal.SIGTERM)

    set_parent_death_signal()
    if parent_pid is not None and os.getppid() != parent_pid:  # it died before the signal was armed
        parent_gone("it exited before the worker started")
        return
    if watch_stdin:
        def read_until_eof() -> None:
            # The raw descriptor, not sys.stdin: a thread blocked inside the buffered reader holds its lock, and
            # interpreter shutdown then aborts ("could not acquire lock for <stdin>").
            try:
                while os.read(STDIN_FD, 4096):
                    pass
            except OSError:
                pass
            parent_gone("its pipe closed")

        threading.Thread(target=read_until_eof, name="parent-pipe", daemon=True).start()


def hold_data_dir(data_dir: Path) -> DataDirLock | None:
    """The one-worker-per-data-directory lock, or None (after one clear line) when another worker has it."""
    lock = worker_lock(data_dir)
    if lock.acquire("worker"):
        return lock
    holder = lock.holder_pid()
    print(f"likeness worker: another worker{f' (pid {holder})' if holder else ''} already serves "
          f"{Path(data_dir).resolve()}; exiting.", file=sys.stderr, flush=True)
    return None
