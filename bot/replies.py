"""Answering interactions the same way everywhere: who is asking, short ephemeral errors, no pings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import discord

from bot.delivery import chunks
from bot.services.errors import ServiceError
from bot.services.types import Requester
from storage.disk import DISK_FULL, is_disk_full

log = logging.getLogger(__name__)

GENERIC_ERROR = "Something went wrong on my side; it has been logged. Please try again in a moment."
NO_PINGS = discord.AllowedMentions.none()


def requester(interaction: discord.Interaction) -> Requester:
    user = interaction.user
    return Requester(
        user_id=user.id,
        display_name=getattr(user, "display_name", None) or user.name,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
    )


async def reply(interaction: discord.Interaction, content: str, *, ephemeral: bool = True, **kwargs) -> None:
    """Send as the response when none was sent yet, else as follow-ups (long text is split at line breaks; files
    and views go with the last part). Mentions are always off."""
    kwargs.setdefault("allowed_mentions", NO_PINGS)
    parts = chunks(content)
    for number, part in enumerate(parts, start=1):
        extra = kwargs if number == len(parts) else {"allowed_mentions": kwargs["allowed_mentions"]}
        if interaction.response.is_done():
            await interaction.followup.send(part, ephemeral=ephemeral, **extra)
        else:
            await interaction.response.send_message(part, ephemeral=ephemeral, **extra)


async def defer(interaction: discord.Interaction) -> None:
    """Acknowledge now (Discord allows 3 s); the answer follows privately."""
    if not interaction.response.is_done():
        await interaction.response.defer(ephemeral=True, thinking=True)


@asynccontextmanager
async def user_errors(interaction: discord.Interaction) -> AsyncIterator[None]:
    """Show a ServiceError's sentence to the user, privately. Anything else gets the generic sentence and is
    re-raised, so discord.py's handlers log it (and SimCord tests see it)."""
    try:
        yield
    except ServiceError as exc:
        log.info("%s refused for user %s: %s", exc.code, interaction.user.id, exc.message)
        await reply(interaction, exc.message)
    except Exception as exc:
        await answer_unexpected(interaction, exc, log_it=False)
        raise


async def answer_unexpected(interaction: discord.Interaction, error: BaseException, *, log_it: bool = True) -> None:
    """The last resort: log the details for the host, tell the user one plain sentence (once)."""
    if log_it:
        log.error("unexpected error in an interaction", exc_info=(type(error), error, error.__traceback__))
    if getattr(error, "likeness_answered", False):
        return
    try:
        error.likeness_answered = True  # type: ignore[attr-defined]
    except AttributeError:
        pass
    try:
        await reply(interaction, DISK_FULL if is_disk_full(error) else GENERIC_ERROR)
    except discord.HTTPException:
        log.warning("could not tell the user about the error")
