"""/train, /train-family and /photos: making and extending subjects."""

from __future__ import annotations

from dataclasses import replace

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.commands.common import bot_of, class_noun_choices, everywhere, subject_choices
from bot.replies import defer, reply, requester, user_errors
from bot.services.training import TrainRequest
from bot.services.types import TrainOutcome, Upload
from bot.views import PhotoUploadModal
from intake.triggers import validate_class_noun, validate_trigger

PHOTO_HINT = "Clear, well-lit photos of one face (yours, or your pet's); 5 to 20 in all."


async def show_training(interaction: discord.Interaction, outcome: TrainOutcome) -> None:
    """The verdict of every photo at once, then the job's progress message in the channel."""
    await reply(interaction, render.train_outcome(outcome))
    if outcome.job_id is not None:
        await bot_of(interaction).watcher.report(outcome.job_id)


def _precheck(trigger: str | None, class_noun: str) -> str | None:
    """Cheap checks before the upload form opens, so nobody uploads 10 photos to hear the trigger is bad."""
    if trigger is not None:
        verdict = validate_trigger(trigger)
        if not verdict.ok:
            return verdict.message
    noun = validate_class_noun(class_noun)
    return None if noun.ok else noun.message


@everywhere
class PhotosGroup(app_commands.Group, name="photos", description="See and manage a subject's photos"):
    @app_commands.command(name="list", description="List a subject's photos")
    @app_commands.autocomplete(subject=subject_choices)
    async def list_photos(self, interaction: discord.Interaction, subject: str) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            photos = await bot_of(interaction).services.photos.list(requester(interaction), subject)
            await reply(interaction, render.photo_list(subject, photos))

    @app_commands.command(name="add", description="Add photos to a subject (opens an upload form)")
    @app_commands.autocomplete(subject=subject_choices)
    async def add(self, interaction: discord.Interaction, subject: str) -> None:
        async def on_photos(inter: discord.Interaction, uploads: list[Upload]) -> None:
            outcome = await bot_of(inter).services.photos.add(requester(inter), subject, uploads)
            await show_training(inter, outcome)

        await interaction.response.send_modal(PhotoUploadModal(f"Add photos of {subject}", on_photos,
                                                               hint=PHOTO_HINT))

    @app_commands.command(name="remove", description="Remove one photo (its number from /photos list)")
    @app_commands.autocomplete(subject=subject_choices)
    async def remove(self, interaction: discord.Interaction, subject: str, number: int) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            await bot_of(interaction).services.photos.remove(requester(interaction), subject, number)
            await reply(interaction, f"Removed photo {number} of `{render.user_text(subject, 40)}`.")

    @app_commands.command(name="caption", description="Set the caption of one photo")
    @app_commands.autocomplete(subject=subject_choices)
    async def caption(self, interaction: discord.Interaction, subject: str, number: int, text: str) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            await bot_of(interaction).services.photos.caption(requester(interaction), subject, number, text)
            await reply(interaction, f"Caption of photo {number} updated.")


class TrainingCommands(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="train", description="Train your likeness from 5-20 photos, or retrain a subject")
    @app_commands.describe(
        trigger="A made-up word for you in prompts, e.g. rraj (suggested when left empty)",
        class_noun="What you are: person, man, woman, boy, girl, dog, cat, or your own word",
        name="A display name for this subject", family="Put this subject in a family group (for /train-family)",
        subject="Retrain one of your subjects from its stored photos (no upload needed)",
    )
    @app_commands.autocomplete(class_noun=class_noun_choices, subject=subject_choices)
    @everywhere
    async def train(self, interaction: discord.Interaction, trigger: str | None = None, class_noun: str = "person",
                    name: str | None = None, family: str | None = None, subject: str | None = None) -> None:
        problem = _precheck(trigger, class_noun)
        if problem:
            await reply(interaction, problem)
            return
        request = TrainRequest(trigger=trigger, class_noun=class_noun, display_name=name, family_group=family,
                               subject=subject)
        if subject is not None:
            async with user_errors(interaction):
                await defer(interaction)
                await show_training(interaction, await bot_of(interaction).services.training.start(
                    requester(interaction), request))
            return

        async def on_photos(inter: discord.Interaction, uploads: list[Upload]) -> None:
            outcome = await bot_of(inter).services.training.start(
                requester(inter), replace(request, uploads=tuple(uploads)))
            await show_training(inter, outcome)

        await interaction.response.send_modal(PhotoUploadModal("Train your likeness", on_photos, hint=PHOTO_HINT))

    @app_commands.command(name="train-family", description="Train one adapter for every subject in a family group")
    @everywhere
    async def train_family(self, interaction: discord.Interaction, family: str) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            outcome = await bot_of(interaction).services.training.train_family(requester(interaction), family)
            await show_training(interaction, outcome)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(TrainingCommands(bot))
    bot.tree.add_command(PhotosGroup())
