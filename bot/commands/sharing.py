"""/share, /unshare and /subjects: who may use whose likeness."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.commands.common import bot_of, everywhere, subject_choices
from bot.replies import defer, reply, requester, user_errors


def _target(interaction: discord.Interaction, user: discord.User | None, server: bool) -> tuple[int | None, int | None]:
    """(user_id, guild_id) of the grant; exactly one of `user` or `server` must be given."""
    if (user is None) == (not server):
        return None, None
    return (user.id, None) if user is not None else (None, interaction.guild_id)


class SharingCommands(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    async def _grant(self, interaction: discord.Interaction, subject: str, user: discord.User | None,
                     server: bool, *, unshare: bool) -> None:
        user_id, guild_id = _target(interaction, user, server)
        if user_id is None and guild_id is None:
            message = ("Run this in a server to share with everyone there, or pick a user." if server and user is None
                       else "Pick either a user or this server (server: True), not both.")
            await reply(interaction, message)
            return
        async with user_errors(interaction):
            await defer(interaction)
            sharing = bot_of(interaction).services.sharing
            action = sharing.unshare if unshare else sharing.share
            outcome = await action(requester(interaction), subject, user_id, guild_id)
            await reply(interaction, render.share_outcome(outcome, unshare=unshare))

    @app_commands.command(name="share", description="Let a user, or everyone in this server, use your likeness")
    @app_commands.describe(subject="Your subject's trigger", user="Who may use it",
                           server="Everyone in this server may use it")
    @app_commands.autocomplete(subject=subject_choices)
    @everywhere
    async def share(self, interaction: discord.Interaction, subject: str, user: discord.User | None = None,
                    server: bool = False) -> None:
        await self._grant(interaction, subject, user, server, unshare=False)

    @app_commands.command(name="unshare", description="Take back a share")
    @app_commands.describe(subject="Your subject's trigger", user="Who may no longer use it",
                           server="This server may no longer use it")
    @app_commands.autocomplete(subject=subject_choices)
    @everywhere
    async def unshare(self, interaction: discord.Interaction, subject: str, user: discord.User | None = None,
                      server: bool = False) -> None:
        await self._grant(interaction, subject, user, server, unshare=True)

    @app_commands.command(name="subjects", description="Your subjects, and those shared with you")
    @everywhere
    async def subjects(self, interaction: discord.Interaction) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            view = await bot_of(interaction).services.sharing.subjects(requester(interaction))
            await reply(interaction, render.subjects_view(view))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(SharingCommands(bot))
