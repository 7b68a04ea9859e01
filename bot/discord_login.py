"""Start the Discord client, waiting out a missing network instead of dying with a traceback.

discord.py's `connect(reconnect=True)` already rides out gateway drops, but the first `login` is a plain HTTP call
that raises on a DNS or connection failure. That call is retried here with exponential backoff, one log line per
attempt; a rejected token (LoginFailure) is not retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import discord

log = logging.getLogger(__name__)

FIRST_DELAY_S = 2.0
MAX_DELAY_S = 60.0
NETWORK_ERRORS = (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


async def login_with_retries(
    client: discord.Client, token: str, *, first_delay_s: float = FIRST_DELAY_S, max_delay_s: float = MAX_DELAY_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> int:
    """Log in, retrying while Discord cannot be reached. Returns the number of attempts it took."""
    delay, attempt = first_delay_s, 1
    while True:
        try:
            await client.login(token)
            return attempt
        except discord.LoginFailure:
            raise
        except NETWORK_ERRORS as exc:
            log.warning("cannot reach Discord (attempt %d: %s); retrying in %.0fs", attempt, _reason(exc), delay)
            # Drop the failed session; closing it also closed its connector, so let login make a new one.
            await client.http.close()
            client.http.connector = discord.utils.MISSING
            await sleep(delay)
            delay, attempt = min(delay * 2, max_delay_s), attempt + 1


async def start_with_retries(client: discord.Client, token: str) -> None:
    """`client.start(token)`, with the login retried while the network is down."""
    await login_with_retries(client, token)
    await client.connect(reconnect=True)
