"""No orphans: the worker dies with the bot or console that started it (kill -9 included), and a second worker
on the same data directory exits at once with one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from storage.locks import INSTANCE_LOCK, is_held, worker_lock

REPO = Path(__file__).resolve().parents[2]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(LIKENESS_DATA_DIR=str(data_dir), LIKENESS_MODEL_FAMILY="tiny-sd15", LIKENESS_WORKER_NICE="0",
               LIKENESS_BACKUP_INTERVAL_H="0", **extra)
    return env


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone: it holds nothing and runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(part) for part in text.split()]
    return found


def _poll(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_second_worker_exits_at_once_with_one_clear_line(tmp_path):
    lock = worker_lock(tmp_path)
    assert lock.acquire()
    try:
        done = subprocess.run([sys.executable, "-m", "trainer", "--until-idle"], cwd=tmp_path,
                              env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    finally:
        lock.release()
    assert done.returncode == 3
    assert "another worker" in done.stderr and str(tmp_path.resolve()) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "likeness.sqlite3").exists()  # it touched nothing


def test_the_worker_never_reads_dot_env(tmp_path):
    (tmp_path / ".env").write_text("LIKENESS_DEVICE=not-a-device\n")  # would stop start-up if it were read
    done = subprocess.run([sys.executable, "-m", "trainer", "--until-idle"], cwd=tmp_path,
                          env=_env(tmp_path / "data"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "LIKENESS_DEVICE" not in done.stderr


def test_a_closed_parent_pipe_stops_the_process(tmp_path):
    """The portable half (no parent-death signal needed): end-of-file on stdin means the parent is gone."""
    code = ("import time; from trainer.process_guard import watch_parent; "
            "watch_parent(None, watch_stdin=True); print('ready', flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.stdin.close()
        assert child.wait(timeout=30) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()


def test_kill_9_of_the_console_takes_its_worker_along(tmp_path):
    # The Discord bot starts its worker through the same WorkerSupervisor; the console needs no network.
    parent = subprocess.Popen([sys.executable, "-m", "bot", "console", "--worker", "subprocess"], cwd=tmp_path,
                              env=_env(tmp_path / "data"), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    worker_pid = None
    try:
        worker_pid = _poll(lambda: next(iter(_children(parent.pid)), None), 120, "the worker to start")
        _poll(lambda: is_held(tmp_path / "data" / "worker.lock"), 120, "the worker to take its lock")
        parent.kill()  # SIGKILL: no shutdown code runs in the parent
        parent.wait(timeout=30)
        _poll(lambda: not _alive(worker_pid), 30, "the orphaned worker to exit")
        assert not is_held(tmp_path / "data" / "worker.lock")
    finally:
        if parent.poll() is None:
            parent.kill()
        if worker_pid is not None and _alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)
            raise AssertionError("the worker outlived its parent")


def test_a_second_console_is_refused_at_once_naming_the_first_and_starts_no_worker(tmp_path):
    data = tmp_path / "data"
    first = subprocess.Popen([sys.executable, "-m", "bot", "console", "--worker", "none"], cwd=tmp_path,
                             env=_env(data), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _poll(lambda: is_held(data / INSTANCE_LOCK), 120, "the first console to take the data directory")
        for mode in ("subprocess", "thread"):
            second = subprocess.run([sys.executable, "-m", "bot", "console", "--worker", mode], cwd=tmp_path,
                                    env=_env(data), input="whoami\n", capture_output=True, text=True, timeout=120)
            assert second.returncode == 1, second.stdout
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and f"the console (pid {first.pid})" in lines[0], second.stderr
            assert str(data.resolve()) in lines[0] and "Traceback" not in second.stderr
            assert not is_held(data / "worker.lock")  # it started no worker
    finally:
        first.stdin.close()
        first.wait(timeout=120)
    assert not is_held(data / INSTANCE_LOCK)  # released when it ended


async def test_the_console_thread_worker_waits_for_the_worker_lock(tmp_path):
    from bot.__main__ import ThreadWorker
    from storage.settings import Settings

    settings = Settings(_env_file=None, data_dir=tmp_path)
    other = worker_lock(tmp_path)
    assert other.acquire("worker")
    try:
        thread_worker = ThreadWorker(settings)
        thread_worker.start()
        time.sleep(0.5)
        assert thread_worker._worker is None  # it never built a worker next to another one
        await thread_worker.stop()
        assert not thread_worker._thread.is_alive()
    finally:
        other.release()
