"""Buttons and modals.

The buttons are persistent `DynamicItem`s: their custom_id carries the record id (`likeness:gen:<id>:reroll`), so
after a restart the bot rebuilds them from the id alone (registered in setup_hook with `add_dynamic_items`), and
an `interaction_check` limits each one to the record's owner. Modals are not persistent: they live while the user
fills them in.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import discord

from bot import render
from bot.client import LikenessClient
from bot.delivery import delete_quietly
from bot.replies import defer, reply, requester, user_errors
from bot.services.types import Upload
from storage import generations, jobs

log = logging.getLogger(__name__)

MAX_FILES_PER_SUBMIT = 10
MAX_INDEXED_BUTTONS = 5  # U1..U5 and V1..V5 fit in one row each


def _bot(interaction: discord.Interaction) -> LikenessClient:
    return interaction.client  # type: ignore[return-value]


async def _refuse(interaction: discord.Interaction, text: str) -> bool:
    await reply(interaction, text)
    return False


# Generation results: upscale, variation, re-roll, delete.
class GenerationButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"likeness:gen:(?P<id>[0-9]{1,20}):(?P<action>reroll|delete|variation|upscale)(?::(?P<index>[0-9]{1,2}))?",
):
    def __init__(self, generation_id: int, action: str, index: int | None = None, *, label: str | None = None,
                 row: int | None = None) -> None:
        custom_id = f"likeness:gen:{generation_id}:{action}" + (f":{index}" if index is not None else "")
        style = discord.ButtonStyle.danger if action == "delete" else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=label or action.title(), style=style, custom_id=custom_id, row=row))
        self.generation_id, self.action, self.index = generation_id, action, index

    @classmethod
    async def from_custom_id(cls, interaction, item, match):  # noqa: ARG003 - discord.py's signature
        index = int(match["index"]) if match["index"] else None
        return cls(int(match["id"]), match["action"], index)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        generation = await _bot(interaction).db.run(generations.get_generation, self.generation_id)
        if generation is None:
            return await _refuse(interaction, "These images were deleted, so their buttons no longer work.")
        if generation.user_id != interaction.user.id:
            return await _refuse(interaction, "Only the person who made these images can use their buttons; "
                                              "try /imagine to make your own.")
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        bot, req = _bot(interaction), requester(interaction)
        imagine = bot.services.imagine
        async with user_errors(interaction):
            await defer(interaction)
            if self.action == "delete":
                await imagine.delete(req, self.generation_id)
                if interaction.message is not None:
                    await delete_quietly(interaction.message)
                await reply(interaction, "Deleted those images and their record.")
                return
            if self.action == "reroll":
                queued = await imagine.reroll(req, self.generation_id)
            elif self.action == "variation":
                queued = await imagine.variation(req, self.generation_id, self.index or 1)
            else:
                queued = await imagine.upscale(req, self.generation_id, self.index or 1)
            await bot.watcher.report(queued.job_id)
            await reply(interaction, render.queued_generation(queued))


def generation_view(generation_id: int, count: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if count == 1:
        view.add_item(GenerationButton(generation_id, "upscale", 1, label="Upscale", row=0))
        view.add_item(GenerationButton(generation_id, "variation", 1, label="Variation", row=0))
    elif 1 < count <= MAX_INDEXED_BUTTONS:
        for index in range(1, count + 1):
            view.add_item(GenerationButton(generation_id, "upscale", index, label=f"U{index}", row=0))
        for index in range(1, count + 1):
            view.add_item(GenerationButton(generation_id, "variation", index, label=f"V{index}", row=1))
    view.add_item(GenerationButton(generation_id, "reroll", label="Re-roll", row=2))
    view.add_item(GenerationButton(generation_id, "delete", label="Delete", row=2))
    return view


# Job progress: cancel.
class JobCancelButton(discord.ui.DynamicItem[discord.ui.Button], template=r"likeness:job:(?P<id>[0-9]{1,20}):cancel"):
    def __init__(self, job_id: int) -> None:
        super().__init__(discord.ui.Button(label="Cancel", style=discord.ButtonStyle.secondary,
                                           custom_id=f"likeness:job:{job_id}:cancel"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):  # noqa: ARG003
        return cls(int(match["id"]))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        job = await _bot(interaction).db.run(jobs.get_job, self.job_id)
        if job is None or job.user_id != interaction.user.id:
            return await _refuse(interaction, "Only the person who started this job can cancel it.")
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = _bot(interaction)
        async with user_errors(interaction):
            await defer(interaction)
            outcome = await bot.services.jobs.cancel(requester(interaction), self.job_id)
            await bot.watcher.report(self.job_id, force=True)
            await reply(interaction, render.cancel_outcome(outcome))


def job_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(JobCancelButton(job_id))
    return view


# /forget: confirm or keep.
class ForgetButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"likeness:forget:(?P<user>[0-9]{1,20}):(?P<action>confirm|keep)",
):
    def __init__(self, user_id: int, action: str) -> None:
        label = "Delete everything" if action == "confirm" else "Keep my data"
        style = discord.ButtonStyle.danger if action == "confirm" else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"likeness:forget:{user_id}:{action}"))
        self.user_id, self.action = user_id, action

    @classmethod
    async def from_custom_id(cls, interaction, item, match):  # noqa: ARG003
        return cls(int(match["user"]), match["action"])

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.user_id:
            return await _refuse(interaction, "Only the person who asked can confirm this.")
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        if self.action == "keep":
            await interaction.response.edit_message(content="Nothing was deleted.", view=None)
            return
        async with user_errors(interaction):
            await interaction.response.edit_message(content="Deleting everything I hold about you\u2026", view=None)
            outcome = await _bot(interaction).services.account.forget(requester(interaction))
            await interaction.edit_original_response(content=render.forget_outcome(outcome))


def forget_view(user_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ForgetButton(user_id, "confirm"))
    view.add_item(ForgetButton(user_id, "keep"))
    return view


DYNAMIC_ITEMS = (GenerationButton, JobCancelButton, ForgetButton)


# Photo uploads (/train and /photos add).
PhotosHandler = Callable[[discord.Interaction, list[Upload]], Awaitable[None]]


def match_captions(text: str | None, count: int) -> list[str | None]:
    """One caption per line, in photo order; blank lines and missing lines mean no caption."""
    lines = (text or "").splitlines()
    return [(lines[i].strip() or None) if i < len(lines) else None for i in range(count)]


class PhotoUploadModal(discord.ui.Modal):
    """Up to 10 photos plus optional captions; on submit it downloads them and hands them to `on_photos`."""

    def __init__(self, title: str, on_photos: PhotosHandler, *, hint: str) -> None:
        super().__init__(title=title[:45], timeout=900)
        self.on_photos = on_photos
        self.photos = discord.ui.FileUpload(custom_id="likeness:photos", min_values=1,
                                            max_values=MAX_FILES_PER_SUBMIT, required=True)
        self.captions = discord.ui.TextInput(
            custom_id="likeness:captions", style=discord.TextStyle.paragraph, required=False, max_length=4000,
            placeholder="Optional: one caption per line, in photo order")
        self.add_item(discord.ui.Label(text=f"Photos (up to {MAX_FILES_PER_SUBMIT})", description=hint[:100],
                                       component=self.photos))
        self.add_item(discord.ui.Label(text="Captions", component=self.captions))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        async with user_errors(interaction):
            await defer(interaction)
            attachments = list(self.photos.values)[:MAX_FILES_PER_SUBMIT]
            captions = match_captions(self.captions.value, len(attachments))
            uploads = [Upload(filename=a.filename, data=await a.read(), caption=c)
                       for a, c in zip(attachments, captions, strict=True)]
            await self.on_photos(interaction, uploads)
