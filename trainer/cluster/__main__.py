"""`python -m trainer.cluster`: the cluster dispatcher, started by the bot instead of `python -m trainer` when
LIKENESS_CLUSTER_ADDRESS is set (README "Scaling out")."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from storage.logs import configure_logging
from storage.settings import SettingsError, load_settings
from trainer.cluster.network import warn_if_public
from trainer.worker import default_owner

log = logging.getLogger("trainer.cluster")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.cluster", description="Likeness cluster dispatcher")
    parser.add_argument("--owner", help="lease owner name (the supervisor sets it so it can requeue on a crash)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
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

    from trainer.cluster.dispatcher import Dispatcher  # imports Ray and torch: after logging is configured

    dispatcher = Dispatcher(settings, args.owner or default_owner())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: dispatcher.request_stop())
    try:
        dispatcher.start()
    except (ConnectionError, RuntimeError) as error:
        log.error("could not join the Ray cluster at %s: %s", settings.cluster_address, error)
        return 3
    dispatcher.run_until_stopped()
    log.info("dispatcher %s stopped", dispatcher.owner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
