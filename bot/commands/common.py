"""What every command module shares: where commands work, and the autocompletes."""

from __future__ import annotations

import logging
import discord
from discord import app_commands

from bot.client import LikenessClient
from bot.replies import requester
from intake.triggers import CLASS_NOUNS

log = logging.getLogger(__name__)

MAX_CHOICES = 25
CHOICE_CHARS = 100


def everywhere(command):
    """Guild channels, DMs with the bot, and group DMs when installed as a user app."""
    command = app_commands.allowed_installs(guilds=True, users=True)(command)
    return app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)(command)


def bot_of(interaction: discord.Interaction) -> LikenessClient:
    return interaction.client  # type: ignore[return-value]


def _choice(name: str, value: str) -> app_commands.Choice[str]:
    return app_commands.Choice(name=name[:CHOICE_CHARS], value=value[:CHOICE_CHARS])


async def class_noun_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    typed = current.strip().lower()
    nouns = [n for n in CLASS_NOUNS if n.startswith(typed)]
    if typed and typed not in nouns:
        nouns.append(typed[:40])  # free text is allowed; the service validates it
    return [_choice(n, n) for n in nouns[:MAX_CHOICES]]


async def _trigger_choices(interaction: discord.Interaction, partial: str):
    try:
        return await bot_of(interaction).services.imagine.trigger_choices(requester(interaction), partial)
    except Exception:
        log.exception("trigger autocomplete failed")
        return []


async def subject_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Triggers this user may use (their own and shared ones)."""
    found = await _trigger_choices(interaction, current.strip())
    return [_choice(c.label, c.trigger) for c in found[:MAX_CHOICES]]


async def prompt_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Complete the word being typed with a usable trigger and its class noun: `a photo of rr` -> `... rraj person`."""
    head, _, last = current.rpartition(" ")
    found = await _trigger_choices(interaction, last.strip())
    choices = []
    for choice in found[:MAX_CHOICES]:
        name = choice.prompt_name
        completed = f"{head} {name}".strip() if last else f"{current}{name}".strip()
        if len(completed) <= CHOICE_CHARS:
            choices.append(_choice(completed, completed))
    if current and len(current) <= CHOICE_CHARS and all(c.value != current for c in choices):
        choices.insert(0, _choice(current, current))
    return choices[:MAX_CHOICES]


async def style_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    try:
        found = await bot_of(interaction).services.imagine.style_choices(current.strip())
    except Exception:
        log.exception("style autocomplete failed")
        return []
    names = [getattr(item, "name", item) for item in found]
    return [_choice(str(n), str(n)) for n in names[:MAX_CHOICES]]
