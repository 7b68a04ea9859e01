"""Sending and editing Discord messages: retries for what discord.py does not retry itself, and files kept inside
Discord's limits (size per file, files per message).

Who retries what:
- discord.py's HTTP client, for every request, up to 5 tries: 429 (after Discord's retry_after), 500, 502, 504 and
  524 (1, 3, 5, 7 s apart) and a connection reset. When one of these reaches us, those tries are spent: we raise
  DeliveryFailed at once and the job watcher tries again on a later pass (its notice then says it is late).
- `with_retry` here: what discord.py raises on the first failure, that is the other 5xx (503, Cloudflare's 520
  and 522) and a dropped or timed-out connection; a few tries with backoff (or the Retry-After it was given).

A `discord.File` can be read only once, so every attempt builds fresh File objects from `FilePayload`s.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import discord
from PIL import Image

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRIED_BY_DISCORD_PY = frozenset({429, 500, 502, 504, 524})
MAX_FILES_PER_MESSAGE = 10
MAX_CONTENT_CHARS = 2000


class DeliveryFailed(Exception):
    """Discord kept failing with a passing error (its retries and ours are spent); the caller tries again later."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_delay_s)
        return min(self.base_delay_s * (2**attempt), self.max_delay_s)


@dataclass(frozen=True)
class FilePayload:
    filename: str
    data: bytes

    def to_file(self) -> discord.File:
        return discord.File(io.BytesIO(self.data), filename=self.filename)


def to_files(payloads: Sequence[FilePayload]) -> list[discord.File]:
    return [payload.to_file() for payload in payloads]


def retried_by_discord_py(exc: BaseException) -> bool:
    """discord.py already retried this request and gave up (or was told to wait longer than it may)."""
    if isinstance(exc, discord.RateLimited):
        return True
    return isinstance(exc, discord.HTTPException) and exc.status in RETRIED_BY_DISCORD_PY


def is_retryable(exc: BaseException) -> bool:
    """A passing failure that discord.py raises at once, without retrying."""
    if isinstance(exc, discord.HTTPException):
        return exc.status >= 500 and exc.status not in RETRIED_BY_DISCORD_PY
    return isinstance(exc, (aiohttp.ClientConnectionError, asyncio.TimeoutError))


def retry_after_of(exc: BaseException) -> float | None:
    """Discord's retry_after, from a RateLimited error, a Retry-After header or the JSON body."""
    value = getattr(exc, "retry_after", None)
    if value is None:
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


async def with_retry(make: Callable[[], Awaitable[T]], *, what: str, policy: RetryPolicy | None = None) -> T:
    """Await `make()`; on a failure discord.py does not retry, wait (Retry-After or exponential backoff) and try
    again. Errors discord.py already retried raise DeliveryFailed at once, as does our last attempt; client errors
    (400, 403, 404) propagate unchanged."""
    policy = policy or RetryPolicy()
    for attempt in range(policy.attempts):
        try:
            return await make()
        except Exception as exc:
            if retried_by_discord_py(exc):
                raise DeliveryFailed(f"{what}: Discord kept failing ({exc})") from exc
            if not is_retryable(exc):
                raise
            if attempt == policy.attempts - 1:
                raise DeliveryFailed(f"{what}: Discord kept failing ({exc})") from exc
            delay = policy.delay(attempt, retry_after_of(exc))
            log.warning("%s failed with %s; retry %d in %.1fs", what, getattr(exc, "status", exc), attempt + 1, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


# Files.
def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def fit_image(payload: FilePayload, max_bytes: int) -> FilePayload:
    """Return the file unchanged when it fits; otherwise a high-quality JPEG (then smaller) that does."""
    if len(payload.data) <= max_bytes:
        return payload
    stem = payload.filename.rsplit(".", 1)[0] or "image"
    with Image.open(io.BytesIO(payload.data)) as opened:
        image = opened.convert("RGB")
    for quality in (95, 90, 82, 72):
        data = _encode(image, "JPEG", quality=quality, optimize=True)
        if len(data) <= max_bytes:
            return FilePayload(f"{stem}.jpg", data)
    while image.width > 64:
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)
        data = _encode(image, "JPEG", quality=85, optimize=True)
        if len(data) <= max_bytes:
            return FilePayload(f"{stem}.jpg", data)
    raise ValueError(f"{payload.filename} cannot be made smaller than {max_bytes} bytes")


def fit_files(payloads: Sequence[FilePayload], max_bytes: int) -> list[FilePayload]:
    """Fit every image; files that are not images and too big are left out (the caller says so)."""
    fitted = []
    for payload in payloads:
        try:
            fitted.append(fit_image(payload, max_bytes))
        except (OSError, ValueError) as exc:
            log.warning("left %s out of a message: %s", payload.filename, exc)
    return fitted


def batches(payloads: Sequence[FilePayload], size: int = MAX_FILES_PER_MESSAGE) -> Iterator[list[FilePayload]]:
    for start in range(0, len(payloads), size):
        yield list(payloads[start : start + size])


def clip(text: str, limit: int = MAX_CONTENT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def chunks(text: str, limit: int = MAX_CONTENT_CHARS) -> list[str]:
    """Split long text into messages at line breaks (a single overlong line is clipped)."""
    parts: list[str] = []
    current = ""
    for line in text.splitlines() or [""]:
        line = clip(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            parts.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    parts.append(current)
    return parts


# Messages.
async def send(
    channel: discord.abc.Messageable,
    content: str,
    *,
    files: Sequence[FilePayload] = (),
    view: discord.ui.View | None = None,
    mentions: discord.AllowedMentions | None = None,
    policy: RetryPolicy | None = None,
) -> discord.Message:
    """Send one message (at most 10 files) with retries; user text never pings unless `mentions` allows it."""
    mentions = mentions or discord.AllowedMentions.none()

    async def attempt() -> discord.Message:
        kwargs = {"content": clip(content), "allowed_mentions": mentions, "files": to_files(files)}
        if view is not None:
            kwargs["view"] = view
        return await channel.send(**kwargs)

    return await with_retry(attempt, what="sending a message", policy=policy)


async def edit(
    message: discord.PartialMessage | discord.Message,
    content: str,
    *,
    files: Sequence[FilePayload] | None = None,
    view: discord.ui.View | None = ...,  # type: ignore[assignment]
    policy: RetryPolicy | None = None,
) -> discord.Message:
    """Edit with retries. `files=None` keeps the attachments; a list replaces them. Mentions stay off."""

    async def attempt() -> discord.Message:
        kwargs = {"content": clip(content), "allowed_mentions": discord.AllowedMentions.none()}
        if files is not None:
            kwargs["attachments"] = to_files(files)
        if view is not ...:
            kwargs["view"] = view
        return await message.edit(**kwargs)

    return await with_retry(attempt, what="editing a message", policy=policy)


async def delete_quietly(message: discord.PartialMessage | discord.Message, policy: RetryPolicy | None = None) -> None:
    """Delete if possible; a message already gone or out of reach is fine."""
    try:
        await with_retry(message.delete, what="deleting a message", policy=policy)
    except (discord.NotFound, discord.Forbidden, DeliveryFailed):
        pass
