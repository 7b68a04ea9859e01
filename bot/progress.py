"""The job watcher: one bot-owned channel message per job, kept up to date from the jobs table.

Every couple of seconds it reads `storage.jobs.jobs_to_report` and, per job, posts or edits that message (at most
every `settings.progress_edit_interval_s`): a progress bar, step/total, the ETA as a Discord timestamp and the
latest preview. When a job ends it posts the finished notice (mentioning only the owner) and marks the job
reported. Progress lives only in the database, so after a restart the first pass re-renders running jobs (posting
a new message when the old one is gone) and announces jobs that finished while the bot was down.

Discord errors never stop the loop: 5xx/429 are retried with backoff (bot.delivery), and a job whose notice could
not be delivered stays unreported, so the next pass tries again and says it is late.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from dataclasses import dataclass, field

import discord
from discord.ext import tasks

from bot import delivery, render
from bot.client import MessagingClient
from bot.delivery import DeliveryFailed, FilePayload
from bot.views import generation_view, job_view
from storage import generations, jobs, subjects

log = logging.getLogger(__name__)

UNREACHABLE = (discord.Forbidden, discord.NotFound)


@dataclass(frozen=True)
class JobDetails:
    """What a job is about, for its message: the subjects trained, or the generation made."""

    label: str | None
    triggers: tuple[str, ...] = ()
    class_nouns: tuple[str, ...] = ()
    generation: generations.Generation | None = None
    position: int | None = None


@dataclass
class _Seen:
    """What this bot process last showed for a job."""

    last_edit: float = -math.inf
    preview: str | None = None
    failures: int = 0
    restarted: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def load_details(conn: sqlite3.Connection, job: jobs.Job) -> JobDetails:
    position = jobs.queue_position(conn, job.id) if job.state == "queued" else None
    if job.kind == "train":
        found = [subjects.get_subject(conn, sid, include_deleted=True) for sid in job.payload.get("subject_ids", [])]
        found = [s for s in found if s is not None]
        triggers = tuple(s.trigger for s in found)
        return JobDetails(", ".join(triggers) or None, triggers, tuple(s.class_noun for s in found), None, position)
    if job.kind == "generate":
        generation = generations.get_generation(conn, int(job.payload.get("generation_id", 0)))
        label = render.user_text(generation.prompt, 60, style=render.Style.PLAIN) if generation else None
        return JobDetails(label, generation=generation, position=position)
    return JobDetails(None, position=position)


class JobWatcher:
    def __init__(self, bot: MessagingClient, *, interval_s: float = 2.0, policy: delivery.RetryPolicy | None = None):
        self.bot = bot
        self.policy = policy or delivery.RetryPolicy()
        self._seen: dict[int, _Seen] = {}
        self._reconciled = False
        self.loop = tasks.loop(seconds=interval_s)(self._tick)

    @property
    def db(self):
        return self.bot.db

    @property
    def store(self):
        return self.bot.store

    def start(self) -> None:
        if not self.loop.is_running():
            self.loop.start()

    def stop(self) -> None:
        self.loop.cancel()

    def _state(self, job_id: int) -> _Seen:
        return self._seen.setdefault(job_id, _Seen())

    # The loop.
    async def _tick(self) -> None:
        try:
            if not self._reconciled:
                await self.reconcile()
            pending = await self.db.run(jobs.jobs_to_report)
        except Exception:
            log.exception("job watcher could not read the queue")
            return
        for job in pending:
            await self.report(job.id)

    async def reconcile(self) -> None:
        """After a (re)start: re-render every active job that has a message, even if nothing changed."""
        active = await self.db.run(jobs.active_jobs)
        for job in active:
            if job.channel_id is not None and job.message_id is not None:
                self._state(job.id).restarted = True
                await self.report(job.id, force=True)
        self._reconciled = True

    async def report(self, job_id: int, *, force: bool = False) -> None:
        """Bring one job's message up to date. Never raises."""
        seen = self._state(job_id)
        async with seen.lock:
            try:
                job = await self.db.run(jobs.get_job, job_id)
                if job is None or job.notified or job.channel_id is None:
                    return
                if job.finished:
                    await self._announce(job, seen)
                    self._seen.pop(job_id, None)
                else:
                    await self._render_progress(job, seen, force)
            except DeliveryFailed as exc:
                seen.failures += 1
                log.warning("job %d: %s; will try again", job_id, exc)
            except Exception:
                seen.failures += 1
                log.exception("job %d: could not update its message", job_id)

    # Progress.
    async def _render_progress(self, job: jobs.Job, seen: _Seen, force: bool) -> None:
        now = time.monotonic()  # SimCord's virtual clock in tests
        interval = self.bot.settings.progress_edit_interval_s
        if job.message_id is not None and not force and now - seen.last_edit < interval:
            return
        details = await self.db.run(load_details, job)
        note = "(The bot restarted; this job kept its place.)" if seen.restarted else None
        body = render.job_progress(
            job_id=job.id, kind=job.kind, state=job.state, step=job.step, total=job.total, message=job.message,
            eta_at=job.eta_at, position=details.position, label=details.label, note=note,
        )
        new_preview = job.preview_path if job.preview_path and job.preview_path != seen.preview else None
        files = await self._read_files([new_preview] if new_preview else [], "preview")
        view = self._cancel_view(job.id)
        message = None
        if job.message_id is not None:
            target = self.bot.get_partial_messageable(job.channel_id).get_partial_message(job.message_id)
            try:
                message = await delivery.edit(target, body, files=files or None, view=view, policy=self.policy)
            except discord.NotFound:
                message = None  # the message was deleted: post a fresh one below
        if message is None:
            if job.preview_path and not files:
                files = await self._read_files([job.preview_path], "preview")
            message = await self._post(job, body, files, view=view)
        seen.last_edit, seen.preview, seen.restarted = now, job.preview_path or seen.preview, False
        await self.db.run(jobs.mark_reported, job.id, notified=False, message_id=message.id)

    def _cancel_view(self, job_id: int) -> discord.ui.View:
        return job_view(job_id)

    # Final notices.
    async def _announce(self, job: jobs.Job, seen: _Seen) -> None:
        details = await self.db.run(load_details, job)
        late = render.late_note(seen.failures)
        if job.state == "cancelled":
            await self._finish_progress_message(job, render.job_progress(
                job_id=job.id, kind=job.kind, state="cancelled", step=job.step, total=job.total, message="",
                eta_at=None, position=None, label=details.label))
            await self.db.run(jobs.mark_reported, job.id, notified=True)
            return
        if job.state == "failed":
            text = render.job_failed(job.kind, details.label, job.error)
            await self._finish_progress_message(job, text)
            notice = await self._post(job, self._with_owner(job, text, late), [], mention_owner=True)
        elif job.kind == "generate":
            notice = await self._deliver_images(job, details, late)
        else:
            notice = await self._deliver_training(job, details, late)
        await self.db.run(jobs.mark_reported, job.id, notified=True, message_id=notice.id if notice else None)

    @staticmethod
    def _with_owner(job: jobs.Job, text: str, late: str | None) -> str:
        owner = f"<@{job.user_id}> " if job.user_id else ""
        return owner + text + (f"\n{late}" if late else "")

    async def _finish_progress_message(self, job: jobs.Job, text: str) -> None:
        if job.message_id is None:
            return
        target = self.bot.get_partial_messageable(job.channel_id).get_partial_message(job.message_id)
        try:
            await delivery.edit(target, text, view=None, policy=self.policy)
        except UNREACHABLE:
            pass  # gone or out of reach; the notice below still tells the owner

    async def _deliver_training(self, job: jobs.Job, details: JobDetails, late: str | None) -> discord.Message:
        result = job.result or {}
        text = render.training_done(details.triggers, details.class_nouns, result)
        await self._finish_progress_message(job, render.job_progress(
            job_id=job.id, kind="train", state="succeeded", step=job.total, total=job.total, message="",
            eta_at=None, position=None, label=details.label) + "\nFinished.")
        files = await self._read_files([result.get("plot_path"), result.get("preview_path")], "training")
        return await self._post(job, self._with_owner(job, text, late), files, mention_owner=True)

    async def _deliver_images(self, job: jobs.Job, details: JobDetails, late: str | None) -> discord.Message | None:
        generation, result = details.generation, job.result or {}
        if generation is None:  # deleted while it was being made
            await self._finish_progress_message(job, "This generation was deleted.")
            return None
        outputs = [p for p in (result.get("outputs") or generation.outputs) if p]
        extra = [result.get("contact_sheet")] if result.get("contact_sheet") else []
        if len(outputs) > 1 and result.get("grid"):
            extra.append(result["grid"])
        files = await self._read_files(extra + outputs, f"gen{generation.id}")
        text = render.generation_done(generation.prompt, result.get("seed", generation.seed), len(outputs),
                                      result.get("warnings") or (), generation.kind)
        view = generation_view(generation.id, len(outputs))
        groups = list(delivery.batches(files)) or [[]]
        first = await self._post(job, self._with_owner(job, text, late), groups[0], view=view, mention_owner=True)
        for group in groups[1:]:
            await self._post(job, f"{len(group)} more image(s) for job #{job.id}", group)
        await self.db.run(generations.set_generation_message, generation.id, first.channel.id, first.id)
        if job.message_id is not None and job.message_id != first.id:
            target = self.bot.get_partial_messageable(job.channel_id).get_partial_message(job.message_id)
            await delivery.delete_quietly(target, self.policy)
        return first

    # Sending.
    async def _read_files(self, paths: list[str | None], prefix: str) -> list[FilePayload]:
        store, limit = self.store, self.bot.settings.max_upload_bytes

        def read() -> list[FilePayload]:
            payloads = []
            for index, rel in enumerate(p for p in paths if p):
                try:
                    data = store.read_bytes(rel)
                except (OSError, ValueError):
                    log.warning("file %s is missing from the store", rel)
                    continue
                ext = rel.rsplit(".", 1)[-1] if "." in rel else "png"
                payloads.append(FilePayload(f"{prefix}-{index + 1}.{ext}", data))
            return delivery.fit_files(payloads, limit)

        return await asyncio.to_thread(read)

    async def _post(
        self, job: jobs.Job, text: str, files: list[FilePayload], *, view: discord.ui.View | None = None,
        mention_owner: bool = False,
    ) -> discord.Message:
        mentions = discord.AllowedMentions.none()
        if mention_owner and job.user_id:
            mentions = discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(job.user_id)])
        channel = self.bot.get_partial_messageable(job.channel_id)
        try:
            message = await delivery.send(channel, text, files=files, view=view, mentions=mentions,
                                          policy=self.policy)
        except UNREACHABLE:
            channel = await self._owner_dm(job)
            message = await delivery.send(channel, text, files=files, view=view, mentions=mentions,
                                          policy=self.policy)
        if job.message_id is None or message.channel.id != job.channel_id:
            await self.db.run(jobs.set_job_message, job.id, message.channel.id, message.id)
        return message

    async def _owner_dm(self, job: jobs.Job) -> discord.DMChannel:
        """The bot cannot post where the job was started (e.g. a group DM of a user-installed app): use a DM."""
        if not job.user_id:
            raise DeliveryFailed(f"job {job.id}: its channel is out of reach and it has no owner to DM")
        user = self.bot.get_user(job.user_id) or await self.bot.fetch_user(job.user_id)
        return await user.create_dm()
