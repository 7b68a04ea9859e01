"""/export and /forget: your data, out or gone."""

from __future__ import annotations

import asyncio

import discord
from discord import app_commands
from discord.ext import commands

from bot import delivery, render
from bot.commands.common import bot_of, everywhere, subject_choices
from bot.delivery import FilePayload
from bot.replies import defer, reply, requester, user_errors
from bot.services.types import ExportBundle
from bot.views import forget_view

FORGET_WARNING = ("This deletes everything I hold about you: photos, adapters, generations and shares, and stops "
                  "your jobs. It cannot be undone.")


async def send_export(interaction: discord.Interaction, bundle: ExportBundle) -> None:
    """By DM when it fits the upload limit (here, privately, when DMs are closed); otherwise explain."""
    if not bundle.fits_upload:
        limit = bot_of(interaction).settings.max_upload_bytes // (1024 * 1024)
        await reply(interaction, render.export_bundle(bundle) + f" That is more than Discord's {limit} MiB upload "
                    "limit, so I can't send it here; the host can copy it with the console's `export` command.")
        return
    payload = FilePayload(bundle.filename, await asyncio.to_thread(bundle.path.read_bytes))
    try:
        dm = await interaction.user.create_dm()
        await delivery.send(dm, render.export_bundle(bundle), files=[payload])
        await reply(interaction, render.export_bundle(bundle, sent_to="sent to you by DM"))
    except (discord.Forbidden, discord.NotFound):
        await reply(interaction, render.export_bundle(bundle, sent_to="attached here (your DMs are closed)"),
                    file=payload.to_file())


class AccountCommands(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="export", description="Get a subject's adapter files (sent by DM)")
    @app_commands.autocomplete(subject=subject_choices)
    @everywhere
    async def export(self, interaction: discord.Interaction, subject: str) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            bundle = await bot_of(interaction).services.account.export(requester(interaction), subject)
            await send_export(interaction, bundle)

    @app_commands.command(name="forget", description="Delete everything the bot holds about you")
    @everywhere
    async def forget(self, interaction: discord.Interaction) -> None:
        await reply(interaction, FORGET_WARNING, view=forget_view(interaction.user.id))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(AccountCommands(bot))
