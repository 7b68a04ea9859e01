"""Slash commands, one module per feature. Each command validates, defers, calls one service and renders."""

from __future__ import annotations

from discord.ext import commands

from bot.commands import account, admin, imagine, jobs, sharing, training

FEATURES = (training, imagine, sharing, jobs, account, admin)


async def register_commands(bot: commands.Bot) -> None:
    for feature in FEATURES:
        await feature.setup(bot)
