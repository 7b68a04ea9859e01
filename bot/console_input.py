"""Where the console's lines come from: a live terminal prompt (prompt_toolkit) or a pipe/file read without blocking
the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.patch_stdout import patch_stdout


class Interrupted(Exception):
    """Ctrl-C at the prompt: the session says which jobs stay queued, then ends."""


async def stdin_lines(stream: TextIO) -> AsyncIterator[str]:
    """Lines from a pipe or file without blocking the event loop.

    A daemon thread reads, so a signal can end the session while the thread still waits for a line."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    wanted = threading.Event()

    def read() -> None:
        while wanted.wait():
            wanted.clear()
            line = stream.readline()
            loop.call_soon_threadsafe(queue.put_nowait, line or None)
            if not line:
                return

    threading.Thread(target=read, name="console-stdin", daemon=True).start()
    while True:
        wanted.set()
        line = await queue.get()
        if line is None:
            return
        yield line


async def terminal_lines(prompt: str = "likeness> ", *, keys=None, screen=None) -> AsyncIterator[str]:
    """Lines typed at a terminal. The prompt stays live while jobs run: whatever the session prints meanwhile
    appears above it (patch_stdout). Ctrl-D ends the session; Ctrl-C raises Interrupted. `keys` and `screen`
    replace the terminal (prompt_toolkit Input and Output), for tests."""
    session: PromptSession[str] = PromptSession(input=keys, output=screen)
    with patch_stdout(raw=True):
        while True:
            try:
                line = await session.prompt_async(prompt)
            except EOFError:
                return
            except KeyboardInterrupt:
                raise Interrupted from None
            yield line
