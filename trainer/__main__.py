"""`python -m trainer`: the GPU worker process. The bot starts and supervises it; it can also be run by hand.

Settings come from the environment only, never from `.env`: the supervisor passes its own settings (without the
token). One worker per data directory (an OS file lock), and it stops when its supervisor dies (process_guard).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys

from storage.disk import storage_failure
from storage.logs import configure_logging
from storage.settings import Settings, SettingsError, load_settings
from trainer.process_guard import LOCKED_EXIT_CODE, hold_data_dir, supervisor_pid, watch_parent
from trainer.versions import drift_warning
from trainer.worker import Worker

log = logging.getLogger("trainer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="Likeness GPU worker")
    parser.add_argument("--owner", help="lease owner name (the supervisor sets it so it can requeue on a crash)")
    parser.add_argument("--until-idle", action="store_true", help="exit when the queue is empty")
    return parser.parse_args(argv)


def build_worker(settings: Settings, *, owner: str | None = None) -> Worker:
    """The worker with every job kind wired: HANDLERS run the jobs, IDLE_TASKS run while the queue is empty."""
    # The handlers load torch and diffusers: imported after logging is configured, so their warnings are formatted.
    from trainer.handlers import HANDLERS, IDLE_TASKS
    from trainer.library_logs import route_model_library_logs

    route_model_library_logs()
    return Worker(settings, HANDLERS, idle_tasks=IDLE_TASKS, owner=owner)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(_env_file=None)
    except SettingsError as exc:
        print(f"likeness worker: {exc}", file=sys.stderr)
        return 2
    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    configure_logging(settings.log_level, secrets=[token])
    lock = hold_data_dir(settings.data_dir)
    if lock is None:
        return LOCKED_EXIT_CODE
    watch_parent(supervisor_pid(), watch_stdin=supervisor_pid() is not None)
    try:
        return _serve(settings, args)
    except (sqlite3.Error, OSError) as exc:  # at start-up or between jobs: one line, never a hang
        print(f"likeness worker: {storage_failure(exc, settings.data_dir)}", file=sys.stderr, flush=True)
        return 1
    finally:
        lock.release()


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    worker = build_worker(settings, owner=args.owner)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.request_stop())
    log.info("worker %s started on %s (%s)", worker.owner, settings.model_family, settings.device)
    if warning := drift_warning():
        log.warning(warning)
    try:
        worker.run(until_idle=args.until_idle)
    finally:
        worker.close()
    log.info("worker %s stopped", worker.owner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
