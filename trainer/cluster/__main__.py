"""`python -m trainer.cluster`: the cluster dispatcher, started by the bot instead of `python -m trainer` when
LIKENESS_CLUSTER_ADDRESS is set (README "Scaling out")."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from storage.logs import configure_logging
from storage.settings import Settings, SettingsError, load_settings
from trainer.cluster.network import warn_if_public
from trainer.process_guard import LOCKED_EXIT_CODE, hold_data_dir, supervisor_pid, watch_parent
from trainer.worker import default_owner

log = logging.getLogger("trainer.cluster")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.cluster", description="Likeness cluster dispatcher")
    parser.add_argument("--owner", help="lease owner name (the supervisor sets it so it can requeue on a crash)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(_env_file=None)  # like the worker: the supervisor passes its settings, no token
    except SettingsError as exc:
        print(f"likeness dispatcher: {exc}", file=sys.stderr)
        return 2
    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    configure_logging(settings.log_level, secrets=[token])
    if not settings.cluster_address:
        print("likeness dispatcher: LIKENESS_CLUSTER_ADDRESS is not set (e.g. ray://head:10001 or auto); "
              "without it run `python -m trainer`.", file=sys.stderr)
        return 2
    warn_if_public(settings.cluster_address)
    lock = hold_data_dir(settings.data_dir)  # one worker or dispatcher per data directory
    if lock is None:
        return LOCKED_EXIT_CODE
    watch_parent(supervisor_pid(), watch_stdin=supervisor_pid() is not None)  # stop when the bot dies
    try:
        return _dispatch(settings, args.owner or default_owner())
    finally:
        lock.release()


def _dispatch(settings: Settings, owner: str) -> int:
    from trainer.cluster.dispatcher import Dispatcher  # imports Ray and torch: after logging is configured

    dispatcher = Dispatcher(settings, owner)
    try:
        dispatcher.start()
    except (ConnectionError, RuntimeError) as error:
        log.error("could not join the Ray cluster at %s: %s", settings.cluster_address, error)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs a handler that just exits
        signal.signal(sig, lambda *_: dispatcher.request_stop())
    dispatcher.run_until_stopped()
    dispatcher.leave_cluster()
    log.info("dispatcher %s stopped", dispatcher.owner)
    return 0


def exit_now(code: int) -> None:
    """Flush and exit without interpreter teardown: the parent-pipe thread (process_guard) may still be blocked
    reading stdin, and tearing down stdin under it aborts the process (exit code -6) after a clean stop."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
