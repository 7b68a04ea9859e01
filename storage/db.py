"""SQLite connections for both processes.

The worker uses plain sqlite3; the bot uses aiosqlite. Both run the same query functions, which take a
sqlite3.Connection: the bot runs them on aiosqlite's own connection thread through `AsyncDatabase.run`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from storage.migrations import migrate
from storage.schema import MIGRATIONS

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 15_000
T = TypeVar("T")


def _enable_wal(conn: sqlite3.Connection) -> None:
    # Switching a new file to WAL takes an exclusive lock without consulting busy_timeout, so two processes
    # creating the database together can see "locked" here. WAL persists in the file, so this is start-up only.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def configure(conn: sqlite3.Connection) -> None:
    """Pragmas every connection gets on open."""
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _enable_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    # Deleted rows are overwritten with zeros, so a forget leaves nothing readable in the file.
    conn.execute("PRAGMA secure_delete = ON")


def connect(path: Path | str, *, apply_migrations: bool = True) -> sqlite3.Connection:
    """Open a configured connection in autocommit mode; transactions are explicit."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    try:
        configure(conn)
        if apply_migrations:
            migrate(conn, MIGRATIONS)
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails half-way on a lock upgrade."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def now() -> float:
    return time.time()


class AsyncDatabase:
    """The bot's database: one aiosqlite connection whose thread runs the shared query functions."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    async def open(cls, path: Path | str) -> AsyncDatabase:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        db = cls(conn, path)
        try:
            await db.run(configure)
            await db.run(migrate, MIGRATIONS)
        except BaseException:
            await conn.close()  # its thread would otherwise keep the process alive after the error
            raise
        return db

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(sqlite3_connection, *args)` on the connection's thread without blocking the event loop."""
        # aiosqlite has no public "run this callable" call; _execute is the hook every public method uses.
        return await self._conn._execute(fn, self._conn._conn, *args, **kwargs)

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> AsyncDatabase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def checkpoint_truncate(conn: sqlite3.Connection) -> bool:
    """Copy the WAL into the database and cut the WAL to zero bytes, so deleted rows leave no old page copies
    behind. False when another connection's open read kept it from finishing."""
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return busy == 0
