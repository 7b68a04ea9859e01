"""/imagine, /headshots and /card: queue a generation; the job watcher posts the images in the channel."""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.commands.common import bot_of, everywhere, prompt_choices, style_choices, subject_choices
from bot.replies import defer, reply, requester, user_errors
from bot.services.types import ImagineOptions, QueuedGeneration

Aspect = Literal["square", "portrait", "landscape", "tall", "wide"]
Scheduler = Literal["ddim", "pndm", "euler", "euler_a", "dpmpp_2m"]
Layout = Literal["portrait", "landscape", "border"]


async def show_queued(interaction: discord.Interaction, queued: QueuedGeneration) -> None:
    await reply(interaction, render.queued_generation(queued))
    await bot_of(interaction).watcher.report(queued.job_id)


class ImagineCommands(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Make images; a trigger (e.g. rraj person) adds that likeness")
    @app_commands.describe(
        prompt="What to make, e.g. a photo of rraj person as a Van Gogh painting",
        negative="What to avoid", seed="A number for repeatable results (random when empty)",
        count="How many images (1-4)", steps="Sampling steps", guidance="How closely to follow the prompt",
        style="An installed style LoRA",
    )
    @app_commands.autocomplete(prompt=prompt_choices, style=style_choices)
    @everywhere
    async def imagine(self, interaction: discord.Interaction, prompt: str, negative: str | None = None,
                      seed: str | None = None, aspect: Aspect | None = None, count: int | None = None,
                      steps: int | None = None, guidance: float | None = None, scheduler: Scheduler | None = None,
                      style: str | None = None) -> None:
        options = ImagineOptions(prompt=prompt, negative_prompt=negative, seed=seed, aspect=aspect, count=count,
                                 steps=steps, guidance=guidance, scheduler=scheduler, style=style)
        async with user_errors(interaction):
            await defer(interaction)
            queued = await bot_of(interaction).services.imagine.imagine(requester(interaction), options)
            await show_queued(interaction, queued)

    @app_commands.command(name="headshots", description="A pack of professional headshots of a subject")
    @app_commands.describe(subject="Whose headshots (yours when you have one subject)", count="How many")
    @app_commands.autocomplete(subject=subject_choices)
    @everywhere
    async def headshots(self, interaction: discord.Interaction, subject: str | None = None,
                        count: int | None = None) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            queued = await bot_of(interaction).services.imagine.headshots(requester(interaction), subject, count)
            await show_queued(interaction, queued)

    @app_commands.command(name="card", description="A holiday card: an image of the people named plus a greeting")
    @app_commands.describe(prompt="The picture, e.g. rraj person and mira woman by a fireplace",
                           greeting="The text on the card", layout="Where the text goes")
    @app_commands.autocomplete(prompt=prompt_choices)
    @everywhere
    async def card(self, interaction: discord.Interaction, prompt: str, greeting: str,
                   layout: Layout | None = None) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            queued = await bot_of(interaction).services.imagine.card(requester(interaction), prompt, greeting, layout)
            await show_queued(interaction, queued)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(ImagineCommands(bot))
