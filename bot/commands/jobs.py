"""/status and /cancel: my jobs, their places in the queue, and stopping one."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.commands.common import bot_of, everywhere
from bot.replies import defer, reply, requester, user_errors


class JobCommands(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="status", description="Your jobs and their places in the queue")
    @everywhere
    async def status(self, interaction: discord.Interaction) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            views = await bot_of(interaction).services.jobs.status(requester(interaction))
            await reply(interaction, render.jobs_view(views))

    @app_commands.command(name="cancel", description="Cancel a job (without a number: your only one, or it asks which)")
    @app_commands.describe(job="The job number from /status")
    @everywhere
    async def cancel(self, interaction: discord.Interaction, job: int | None = None) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            outcome = await bot_of(interaction).services.jobs.cancel(requester(interaction), job)
            await bot_of(interaction).watcher.report(outcome.job_id, force=True)
            await reply(interaction, render.cancel_outcome(outcome))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(JobCommands(bot))
