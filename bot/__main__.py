"""`python -m bot`: the Discord bot when LIKENESS_DISCORD_TOKEN is set, else the offline console.

    python -m bot [console options]              # Discord with a token; without one, the tiny-sd15 console
    python -m bot console [--model tiny-sd15] [--out DIR] [--worker subprocess|thread|none] [--script FILE]
    python -m bot demo-photos DIR                # sample photos of one face to try training with
    python -m bot backup | restore [--force] [FILE] | verify   # the database's backups (storage/backup_commands.py)

Dependencies are built once here (settings, logging, database, file store, services, worker supervisor) and passed
in; shutdown closes them in reverse order. SIGTERM stops the bot first, then the worker, which checkpoints its step.
One Likeness per data directory: the bot or console holds the instance lock (storage/locks.py) from before the
database is checked until it exits, and finishes any unfinished forget before it serves anyone.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import signal
import sqlite3
import sys
import threading
from contextlib import suppress
from pathlib import Path

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from bot.console_warnings import show_warnings_as_product_lines
from bot.maintenance import Maintenance, admin_notifier
from storage import backup_commands
from storage.disk import DiskFullError, storage_failure
from storage.integrity import DatabaseDamaged, check_database
from storage.locks import DataDirBusy, hold_instance, is_held, worker_lock
from storage.logs import QUIET_LIBRARIES_ENV, configure_logging
from storage.settings import REAL_FAMILIES, TINY_FAMILIES, Settings, SettingsError, load_settings

log = logging.getLogger("bot")

DEMO_MODEL = "tiny-sd15"
WORKER_LOCK_RETRY_S = 2.0
NO_TOKEN_LINE = (f"No Discord token configured (LIKENESS_DISCORD_TOKEN): starting the offline console on the "
                 f"{DEMO_MODEL} demo model. Type `help`.")


CONSOLE_OPTIONS = ("model", "out", "worker", "script")


def _console_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """The console's options; at the top level (`./run-bot --out cards`) they also mean "start the console"."""
    default = argparse.SUPPRESS if top_level else None
    parser.add_argument("--model", choices=TINY_FAMILIES + REAL_FAMILIES, default=default,
                        help="model family (default: LIKENESS_MODEL_FAMILY; tiny-sd15 when no token is set)")
    parser.add_argument("--out", type=Path, default=default if top_level else Path("out"),
                        help="where output files go (default ./out)")
    parser.add_argument("--worker", choices=("subprocess", "thread", "none"),
                        default=default if top_level else "subprocess",
                        help="how the GPU worker runs (default: a supervised subprocess)")
    parser.add_argument("--script", type=Path, default=default,
                        help="read commands from this file instead of stdin")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Likeness: Discord bot and console")
    top = parser.add_argument_group("console options (they start the console, as `python -m bot console` does)")
    _console_options(top, top_level=True)
    modes = parser.add_subparsers(dest="mode")
    console = modes.add_parser("console", help="run the commands in a terminal (no Discord needed)")
    _console_options(console, top_level=False)
    demo = modes.add_parser("demo-photos", help="write sample photos of one face to try /train with")
    demo.add_argument("dir", type=Path)
    modes.add_parser("discord", help="run the Discord bot (needs LIKENESS_DISCORD_TOKEN)")
    modes.add_parser("backup", help="back up the database now (it is also backed up on a schedule)")
    restore = modes.add_parser("restore", help="replace the database with a backup (Likeness must be stopped)")
    restore.add_argument("file", type=Path, nargs="?", help="the backup to restore (default: the newest safe one)")
    restore.add_argument("--force", action="store_true",
                         help="restore even an empty backup, or one that lacks rows for stored files")
    modes.add_parser("verify", help="check the database and every backup")
    return parser.parse_args(argv)


async def build_services(settings: Settings, db, store):
    from bot.services import Services

    services = Services.build(settings, db, store)
    return await services if inspect.isawaitable(services) else services


async def finish_forgets(settings: Settings, db, store) -> None:
    """Before serving: any forget a crash interrupted is finished, and any forgotten user a restore brought back
    is erased again (storage/forget.py)."""
    from storage import forget

    running = is_held(worker_lock(settings.data_dir).path)
    await db.run(forget.finish_at_start, store, worker_running=running)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


# Discord.
async def run_discord(settings: Settings, token: str) -> int:
    import discord

    from bot.app import create_bot
    from bot.discord_login import start_with_retries
    from bot.supervisor import WorkerSupervisor
    from storage.db import AsyncDatabase
    from storage.files import FileStore

    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with await AsyncDatabase.open(settings.database_path) as db:
        services = await build_services(settings, db, FileStore(settings.store_dir))
        await finish_forgets(settings, db, services.store)
        supervisor = WorkerSupervisor(settings, db)
        supervisor.start()
        maintenance = Maintenance(settings, db, services.store)
        maintenance.start()
        try:
            async with create_bot(settings, services, supervisor=supervisor) as bot:
                maintenance.notify = admin_notifier(bot, settings)
                runner = asyncio.create_task(start_with_retries(bot, token), name="discord-bot")
                stopper = asyncio.create_task(stop.wait(), name="stop-signal")
                done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if runner in done:
                    runner.result()
                log.info("stopping: closing the Discord connection, then the worker")
                await bot.close()
                stopper.cancel()
        except discord.LoginFailure:
            print("likeness: Discord rejected LIKENESS_DISCORD_TOKEN; copy the bot token again from the "
                  "Developer Portal.", file=sys.stderr)
            return 1
        finally:
            await maintenance.stop()
            await supervisor.stop()
    return 0


# Console.
class ThreadWorker:
    """The worker in this process (no subprocess): handy for tests and small machines. It holds the worker lock
    like any worker, so it never runs jobs next to another worker on the same data directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._worker = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)

    def start(self) -> None:
        os.environ.update(QUIET_LIBRARIES_ENV)  # the model libraries run in this process: no progress bars
        self._thread.start()

    def _run(self) -> None:
        # Only --worker thread loads the worker (torch) into the bot process; the import contract allows this one.
        from trainer.__main__ import build_worker

        lock = worker_lock(self.settings.data_dir)
        if not lock.acquire("worker (console thread)"):
            log.warning("another worker (%s) already serves %s; this console's worker starts when it stops",
                        lock.describe_holder(), self.settings.data_dir)
            while not lock.acquire("worker (console thread)"):
                if self._stopping.wait(WORKER_LOCK_RETRY_S):
                    self._ready.set()
                    return
        try:
            self._worker = build_worker(self.settings)
            self._ready.set()
            try:
                self._worker.run()
            finally:
                self._worker.close()
        finally:
            self._ready.set()
            lock.release()

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.to_thread(self._ready.wait, 120)
        if self._worker is not None:
            self._worker.request_stop()
        await asyncio.to_thread(self._thread.join, 300)


async def run_console(settings: Settings, args: argparse.Namespace) -> int:
    from bot.console import INTERRUPTED, ConsoleSession, operator_settings, stdin_lines, terminal_lines
    from bot.supervisor import WorkerSupervisor
    from storage.db import AsyncDatabase
    from storage.files import FileStore

    settings = operator_settings(settings)  # the console's user 1 runs the host: an admin
    async with await AsyncDatabase.open(settings.database_path) as db:
        store = FileStore(settings.store_dir)
        services = await build_services(settings, db, store)
        await finish_forgets(settings, db, store)
        worker = None
        if args.worker == "subprocess":
            worker = WorkerSupervisor(settings, db, worker_log=settings.log_path)
        elif args.worker == "thread":
            worker = ThreadWorker(settings)
        if worker is not None:
            worker.start()
        maintenance = Maintenance(settings, db, store, sweep=True)  # a forget waiting for a job ends when it stops
        maintenance.start()
        stop, interrupted = asyncio.Event(), asyncio.Event()
        _stop_on_signals(stop)
        with suppress(NotImplementedError, RuntimeError):  # SIGINT also says which jobs stay queued
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, lambda: (interrupted.set(), stop.set()))
        try:
            # At a terminal jobs run in the background under a live prompt; scripts and pipes stay sequential.
            live = args.script is None and sys.stdin.isatty()
            session = ConsoleSession(services, out_dir=args.out, waits=worker is not None, background=live)
            if args.script is not None:
                lines = args.script.read_text(encoding="utf-8").splitlines()
            else:
                lines = terminal_lines() if live else stdin_lines(sys.stdin)
            code = await _until_stopped(session.run(lines), stop)
            code = INTERRUPTED if interrupted.is_set() else code
            await session.finish(interrupted=code == INTERRUPTED)
            return code
        finally:
            await maintenance.stop()
            if worker is not None:
                await worker.stop()


async def _until_stopped(work, stop: asyncio.Event) -> int:
    """Run the session until it ends or SIGTERM/SIGINT arrives; either way the caller then stops the worker."""
    session = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if session in done:
        return session.result()
    session.cancel()
    with suppress(asyncio.CancelledError):
        await session
    log.info("stopped by a signal")
    return 0


def _as_console(args: argparse.Namespace, given: list[str]) -> argparse.Namespace:
    """Top-level console options: the same namespace as `console` with them (the other options at defaults)."""
    console = parse_args(["console"])
    for name in given:
        setattr(console, name, getattr(args, name))
    if console.model is None and not configured_token_present():
        console.model = DEMO_MODEL  # as the console started without a token: the demo model
    if not configured_token_present():
        print(NO_TOKEN_LINE if console.model == DEMO_MODEL else
              f"No Discord token configured (LIKENESS_DISCORD_TOKEN): starting the offline console on "
              f"{console.model}. Type `help`.", flush=True)
    return console


def _settings_for(args: argparse.Namespace, default_console: bool) -> Settings:
    overrides: dict[str, object] = {}
    model = DEMO_MODEL if default_console else getattr(args, "model", None)
    if model:
        overrides["model_family"] = model
    return load_settings(**overrides)


class _TokenOnly(BaseSettings):
    """Reads just the token (environment or .env), so the first line can be printed before anything else."""

    model_config = Settings.model_config
    discord_token: SecretStr | None = None


def configured_token_present() -> bool:
    try:
        token = _TokenOnly().discord_token
    except ValidationError:
        return False
    return bool(token and token.get_secret_value().strip())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "demo-photos":
        from bot.demo_photos import write_demo_photos

        for path in write_demo_photos(args.dir):
            print(f"wrote {path}")
        return 0
    has_token = configured_token_present()
    given = [name for name in CONSOLE_OPTIONS if getattr(args, name, None) is not None]
    if args.mode is None and given:  # `./run-bot --out cards`: the console, with these options
        args = _as_console(args, given)
    default_console = args.mode is None and not has_token
    if default_console:
        print(NO_TOKEN_LINE, flush=True)
    try:
        settings = _settings_for(args, default_console)
    except SettingsError as exc:
        print(f"likeness: {exc}", file=sys.stderr)
        return 2
    token = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    console = args.mode == "console" or default_console
    # The console's terminal is for the conversation: only our own warnings show there, as product lines (never
    # raw log records); everything goes to the log file. The backup tools print their one line of result.
    tool = args.mode in ("backup", "restore", "verify")
    stream = configure_logging(settings.log_level, secrets=[token], log_file=settings.log_path,
                               stream_level="WARNING" if console or tool else None)
    if console:
        show_warnings_as_product_lines(stream)
    if tool:
        code, text = backup_commands.run_command(args.mode, settings.database_path, settings.store_dir,
                                                 settings.backup_keep, getattr(args, "file", None),
                                                 getattr(args, "force", False))
        print(text, file=sys.stdout if code == 0 else sys.stderr)
        return code
    try:
        instance = hold_instance(settings.data_dir, "console" if console else "Discord bot")
    except DataDirBusy as exc:
        print(f"likeness: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the data directory cannot even hold the lock file (a full or read-only disk)
        print(f"likeness: {storage_failure(exc, settings.data_dir)}", file=sys.stderr)
        return 1
    try:
        return _serve(args, settings, token, console=console, default_console=default_console)
    finally:
        instance.release()


def _serve(args: argparse.Namespace, settings: Settings, token: str, *, console: bool,
           default_console: bool) -> int:
    try:  # before anything opens the database: opening a damaged one can make the damage permanent
        check_database(settings.database_path, settings.store_dir, settings.backups_dir)
    except DatabaseDamaged as exc:
        print(f"likeness: {exc}", file=sys.stderr)
        return 1
    except DiskFullError as exc:
        print(f"likeness: {storage_failure(exc, settings.data_dir)}", file=sys.stderr)
        return 1
    if console:
        if default_console:
            args = parse_args(["console"])
        return _storage_errors_in_one_line(run_console(settings, args), settings)
    if not token:
        print("likeness: LIKENESS_DISCORD_TOKEN is not set; `python -m bot console` runs without Discord.",
              file=sys.stderr)
        return 2
    return _storage_errors_in_one_line(run_discord(settings, token), settings)


def _storage_errors_in_one_line(run, settings: Settings) -> int:
    """A full disk or a failing database ends the process with one line and a non-zero exit, never a traceback."""
    try:
        return asyncio.run(run)
    except (sqlite3.Error, OSError) as exc:
        print(f"likeness: {storage_failure(exc, settings.data_dir)}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
