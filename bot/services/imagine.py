"""/imagine, /headshots, /card, the result buttons (re-roll, variation, upscale, delete) and autocomplete."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from functools import partial

from bot.services import derived
from bot.services.cards import LAYOUTS, check_drawable, clean_greeting, validate_layout
from bot.services.context import ServiceContext
from bot.services.errors import ServiceError
from bot.services.generation_queue import (
    GenerationDraft, generation_params, queue_generation, resolve_style, style_entry,
    subject_entries,
)
from bot.services.headshots import DEFAULT_HEADSHOTS, HEADSHOT_NEGATIVE, HEADSHOT_PROMPTS, headshot_prompts
from bot.services.params import SamplingOptions, sampling_options, validate_count
from bot.services.prompts import (
    MAX_NEGATIVE_CHARS, ResolvedSubject, check_blocklist, clean_prompt, resolve_prompt,
)
from bot.services.subject_access import newest_usable_adapter, usable_subject
from bot.services.types import DeletedGeneration, ImagineOptions, QueuedGeneration, Requester, TriggerChoice
from storage import consent, generations, jobs, subjects
from storage.adapters import newest_adapter_for_subject
from storage.files import UnsafePathError, generation_root
from storage.generations import Generation
from storage.subjects import Subject
from intake.triggers import normalise_trigger

log = logging.getLogger(__name__)

MAX_CHOICES = 25  # Discord's autocomplete limit
DraftBuilder = Callable[[sqlite3.Connection], GenerationDraft]


class ImagineService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    # Queueing.
    async def imagine(self, req: Requester, options: ImagineOptions) -> QueuedGeneration:
        prompt = self._checked_prompt(options.prompt)
        negative = clean_prompt(
            options.negative_prompt, what="negative prompt", max_chars=MAX_NEGATIVE_CHARS, required=False
        )
        sampling = sampling_options(
            self.ctx.family, seed=options.seed, aspect=options.aspect, count=options.count, steps=options.steps,
            guidance=options.guidance, scheduler=options.scheduler,
        )
        build = partial(self._prompt_draft, req=req, kind="imagine", prompt=prompt, negative=negative,
                        sampling=sampling, style_name=options.style)
        return await self._queue(req, build)

    async def reroll(self, req: Requester, generation_id: int) -> QueuedGeneration:
        return await self._queue(req, partial(derived.reroll_draft, ctx=self.ctx, req=req, generation_id=generation_id))

    async def variation(self, req: Requester, generation_id: int, index: int) -> QueuedGeneration:
        return await self._queue(
            req, partial(derived.variation_draft, ctx=self.ctx, req=req, generation_id=generation_id, index=index)
        )

    async def upscale(self, req: Requester, generation_id: int, index: int) -> QueuedGeneration:
        return await self._queue(
            req, partial(derived.upscale_draft, ctx=self.ctx, req=req, generation_id=generation_id, index=index)
        )

    async def headshots(self, req: Requester, trigger: str | None = None, count: int | None = None) -> QueuedGeneration:
        chosen = validate_count(
            count, maximum=len(HEADSHOT_PROMPTS), default=DEFAULT_HEADSHOTS, what="The number of headshots"
        )
        sampling = sampling_options(self.ctx.family, aspect="portrait", count=1)
        return await self._queue(req, partial(self._headshot_draft, req=req, trigger=trigger, count=chosen,
                                              sampling=sampling))

    async def card(self, req: Requester, prompt: str, greeting: str, layout: str | None = None) -> QueuedGeneration:
        text = self._checked_prompt(prompt)
        greeting_text = clean_greeting(greeting)
        check_blocklist(greeting_text, self.ctx.settings.prompt_blocklist)
        await asyncio.to_thread(check_drawable, greeting_text)
        chosen_layout = validate_layout(layout)
        sampling = sampling_options(self.ctx.family, aspect=LAYOUTS[chosen_layout], count=1)
        build = partial(self._prompt_draft, req=req, kind="card", prompt=text, negative="", sampling=sampling,
                        style_name=None, greeting=greeting_text, layout=chosen_layout)
        return await self._queue(req, build)

    async def _queue(self, req: Requester, build: DraftBuilder) -> QueuedGeneration:
        previous = self.ctx.limits.begin_generation(req.user_id)
        try:
            return await self.ctx.db.run(self._build_and_queue, req, build)
        except BaseException:
            self.ctx.limits.undo_generation(req.user_id, previous)
            raise

    def _build_and_queue(self, conn: sqlite3.Connection, req: Requester, build: DraftBuilder) -> QueuedGeneration:
        draft = build(conn)
        return queue_generation(conn, self.ctx.limits, req, draft, self.ctx.settings.job_max_attempts)

    def _checked_prompt(self, raw: object) -> str:
        prompt = clean_prompt(raw)
        check_blocklist(prompt, self.ctx.settings.prompt_blocklist)
        return prompt

    # Drafts (database thread).
    def _prompt_draft(
        self, conn: sqlite3.Connection, *, req: Requester, kind: str, prompt: str, negative: str,
        sampling: SamplingOptions, style_name: str | None, **extra: object,
    ) -> GenerationDraft:
        resolved = resolve_prompt(conn, req, prompt, self.ctx.family)
        style = resolve_style(conn, style_name, self.ctx.family)
        entries = subject_entries(resolved.subjects) + ([style_entry(style)] if style else [])
        warnings = list(sampling.warnings)
        if kind == "card" and not resolved.subjects:
            warnings.append("No trigger word in the prompt, so the card shows nobody you trained.")
        return GenerationDraft(
            kind=kind, prompt=resolved.prompt, negative_prompt=negative, seed=sampling.seed,
            params=generation_params(sampling.as_params(), style=style.name if style else None, **extra),
            adapters=entries, subject_ids=tuple(item.subject.id for item in resolved.subjects),
            triggers=tuple(item.subject.trigger for item in resolved.subjects), warnings=tuple(warnings),
        )

    def _headshot_draft(
        self, conn: sqlite3.Connection, *, req: Requester, trigger: str | None, count: int, sampling: SamplingOptions
    ) -> GenerationDraft:
        subject = usable_subject(conn, req, trigger) if trigger and trigger.strip() else self._default_subject(conn, req)
        item = ResolvedSubject(subject, newest_usable_adapter(conn, subject, self.ctx.family))
        prompts = headshot_prompts(subject.prompt_name, count)
        return GenerationDraft(
            kind="headshots", prompt=f"professional headshots of {subject.prompt_name}",
            negative_prompt=HEADSHOT_NEGATIVE, seed=sampling.seed,
            params=generation_params(sampling.as_params(), headshot_prompts=prompts),
            adapters=subject_entries([item]), subject_ids=(subject.id,), triggers=(subject.trigger,),
            warnings=sampling.warnings,
        )

    def _default_subject(self, conn: sqlite3.Connection, req: Requester) -> Subject:
        own = subjects.subjects_owned(conn, req.user_id)
        if len(own) == 1:
            return own[0]
        if not own:
            raise ServiceError(
                "no_subject", "You have no subject yet; train one with /train, or name one shared with you."
            )
        trained = [s for s in own if _has_adapter(conn, s, self.ctx.family)]
        if len(trained) == 1:
            return trained[0]
        names = ", ".join(f"`{s.trigger}`" for s in own[:10])
        raise ServiceError("choose_subject", f"You have several subjects ({names}); say which one.")

    # Deleting.
    async def delete(self, req: Requester, generation_id: int) -> DeletedGeneration:
        generation, cancelled = await self.ctx.db.run(self._delete_row, req, generation_id)
        removed = await asyncio.to_thread(self._delete_files, generation)
        return DeletedGeneration(generation.id, removed, cancelled)

    def _delete_files(self, generation: Generation) -> int:
        store = self.ctx.store
        root = generation_root(generation.user_id, generation.id)
        files = set(store.list_files(root))
        for key in generation.outputs:
            try:
                if store.exists(key):
                    files.add(key)
                store.delete(key)
            except UnsafePathError:
                log.warning("generation %d lists an unsafe output path; left alone", generation.id)
        store.delete(root)
        return len(files)

    def _delete_row(self, conn: sqlite3.Connection, req: Requester, generation_id: int):
        generation = derived.own_generation(conn, req, generation_id)
        cancelled = False
        if generation.job_id is not None:
            cancelled = jobs.request_cancel(conn, generation.job_id) in ("cancelled", "requested")
        generations.delete_generation(conn, generation.id)
        return generation, cancelled

    # Autocomplete.
    async def trigger_choices(self, req: Requester, partial: str | None) -> list[TriggerChoice]:
        """The triggers this user may use (own first, then shared), matching what was typed so far."""
        return await self.ctx.db.run(self._trigger_choices, req, normalise_trigger(partial or "")[:40])

    def _trigger_choices(self, conn: sqlite3.Connection, req: Requester, typed: str) -> list[TriggerChoice]:
        choices = []
        for subject in consent.usable_subjects(conn, req.user_id, req.guild_id):
            if typed and not (subject.trigger.startswith(typed) or typed in subject.display_name.lower()):
                continue
            whose = "yours" if subject.owner_id == req.user_id else "shared with you"
            label = f"{subject.prompt_name} ({subject.display_name}, {whose})"[:100]
            choices.append(TriggerChoice(subject.trigger, label, subject.prompt_name))
        return choices[:MAX_CHOICES]

    async def style_choices(self, partial: str | None) -> list[str]:
        typed = (partial or "").strip().lower()[:40]
        styles = await self.ctx.db.run(generations.list_styles, self.ctx.family)
        return [style.name for style in styles if typed in style.name][:MAX_CHOICES]


def _has_adapter(conn: sqlite3.Connection, subject: Subject, family: str) -> bool:
    return newest_adapter_for_subject(conn, subject.id, family) is not None
