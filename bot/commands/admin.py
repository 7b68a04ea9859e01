"""/admin: the queue, the style library and the limits. The services refuse non-admins (LIKENESS_ADMIN_USER_IDS)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.commands.common import bot_of, everywhere, style_choices
from bot.replies import defer, reply, requester, user_errors
from bot.services.types import Upload


def _worker_line(interaction: discord.Interaction) -> str:
    supervisor = bot_of(interaction).supervisor
    if supervisor is None:
        return "Worker: not supervised by this bot."
    state = supervisor.state
    running = "running" if supervisor.running else "stopped"
    return f"Worker: {running} (pid {state.pid}, started {state.starts} time(s), last exit {state.last_exit_code})."


@everywhere
class AdminGroup(app_commands.Group, name="admin", description="Host tools: queue, styles, limits"):
    @app_commands.command(name="queue", description="Every active job, in the order they will run")
    async def queue(self, interaction: discord.Interaction) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            views = await bot_of(interaction).services.jobs.queue(requester(interaction))
            lag = bot_of(interaction).loop_lag.summary()
            extra = f"\n{_worker_line(interaction)}\nEvent-loop lag p99: {lag['p99_ms']} ms."
            nodes = await bot_of(interaction).services.admin.cluster_nodes(requester(interaction))
            extra += "\n" + render.cluster_view(nodes) if nodes is not None else ""
            await reply(interaction, render.jobs_view(views, with_owner=True) + extra)

    @app_commands.command(name="add-style", description="Install a style LoRA (a .safetensors file)")
    @app_commands.describe(name="What users pick in /imagine style", file="The LoRA file",
                           weight="How strongly it applies (0.1-2, default 0.8)")
    async def add_style(self, interaction: discord.Interaction, name: str, file: discord.Attachment,
                        weight: float | None = None) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            upload = Upload(filename=file.filename, data=await file.read())
            info = await bot_of(interaction).services.admin.add_style(requester(interaction), name, upload, weight)
            await reply(interaction, "Installed:\n" + render.styles_list([info]))

    @app_commands.command(name="remove-style", description="Remove a style LoRA")
    @app_commands.autocomplete(name=style_choices)
    async def remove_style(self, interaction: discord.Interaction, name: str) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            await bot_of(interaction).services.admin.remove_style(requester(interaction), name)
            await reply(interaction, f"Removed the style `{render.user_text(name, 40)}`.")

    @app_commands.command(name="limits", description="The per-user limits, and where you stand")
    async def limits(self, interaction: discord.Interaction) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            limits = await bot_of(interaction).services.admin.limits(requester(interaction))
            await reply(interaction, render.limits_view(limits))


async def setup(bot: commands.Bot) -> None:
    bot.tree.add_command(AdminGroup())
