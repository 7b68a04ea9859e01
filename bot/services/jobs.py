"""/status (my jobs and their places in the queue), /cancel, and the admins' queue view."""

from __future__ import annotations

import sqlite3

from bot.services.context import ServiceContext
from bot.services.errors import ServiceError
from bot.services.generation_queue import check_record_id
from bot.services.types import CancelOutcome, JobView, Requester
from bot.services.verbs import slash
from storage import generations, jobs, subjects
from storage.files import FileStore, UnsafePathError
from storage.jobs import Job


def _triggers(conn: sqlite3.Connection, job: Job) -> tuple[int | None, tuple[str, ...]]:
    """(generation id, subject triggers) of a job."""
    if job.kind == "train":
        found = (subjects.get_subject(conn, sid) for sid in job.payload.get("subject_ids", ()))
        return None, tuple(subject.trigger for subject in found if subject is not None)
    if job.kind == "generate":
        generation = generations.get_generation(conn, job.payload.get("generation_id", 0))
        if generation is None:
            return None, ()
        names = tuple(entry["trigger"] for entry in generation.adapters if entry.get("kind") == "subject")
        return generation.id, names
    return None, ()


def job_label(conn: sqlite3.Connection, job: Job) -> str | None:
    """What a job is about, in a few words: its triggers, or the start of its prompt."""
    _, triggers = _triggers(conn, job)
    if triggers:
        return ", ".join(triggers)
    if job.kind == "generate":
        generation = generations.get_generation(conn, job.payload.get("generation_id", 0))
        if generation is not None and generation.prompt:
            prompt = " ".join(generation.prompt.split())
            return f'"{prompt[:37]}\u2026"' if len(prompt) > 40 else f'"{prompt}"'
    return None


def _which_job(conn: sqlite3.Connection, active: list[Job]) -> str:
    listed = []
    for job in sorted(active, key=lambda j: j.id):
        label = job_label(conn, job)
        what = {"train": "training", "generate": "pictures"}.get(job.kind, job.kind)
        listed.append(f"#{job.id} ({what}{' ' + label if label else ''}, {job.state})")
    newest = max(job.id for job in active)
    return (f"You have {len(active)} jobs running or waiting: {'; '.join(listed)}. Say which one to cancel, "
            f"e.g. `{slash('cancel-job', job=newest)}`.")


def _preview(store: FileStore, key: str | None):
    if not key:
        return None
    try:
        path = store.resolve(key)
    except UnsafePathError:
        return None
    return path if path.is_file() else None


def job_view(conn: sqlite3.Connection, store: FileStore, job: Job) -> JobView:
    stalled = jobs.is_stalled(job) or (job.state == "queued" and job.message == jobs.STALLED_MESSAGE)
    job = jobs.as_shown(job)  # a stalled job shows "stalled, restarting", never a stale ETA
    generation_id, triggers = _triggers(conn, job)
    return JobView(
        job_id=job.id, kind=job.kind, state=job.state, position=jobs.queue_position(conn, job.id), step=job.step,
        total=job.total, message=job.message, eta_at=job.eta_at, preview_path=_preview(store, job.preview_path),
        error=job.error, triggers=triggers, user_id=job.user_id, created_at=job.created_at,
        cancel_requested=job.cancel_requested, generation_id=generation_id,
        node=job.node if job.state == "running" else None, stalled=stalled,
    )


class JobService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def status(self, req: Requester) -> list[JobView]:
        return await self.ctx.db.run(self._views, req.user_id)

    async def queue(self, req: Requester) -> list[JobView]:
        if not self.ctx.is_admin(req.user_id):
            raise ServiceError("admins_only", "Only the bot's admins (the host lists them in "
                               "LIKENESS_ADMIN_USER_IDS) can see the whole queue; /status shows yours.")
        return await self.ctx.db.run(self._views, None)

    async def cancel(self, req: Requester, job_id: int | None = None) -> CancelOutcome:
        if job_id is not None:
            job_id = check_record_id(job_id, "job")
        return await self.ctx.db.run(self._cancel, req, job_id)

    def _views(self, conn: sqlite3.Connection, user_id: int | None) -> list[JobView]:
        return [job_view(conn, self.ctx.store, job) for job in jobs.active_jobs(conn, user_id)]

    def _cancel(self, conn: sqlite3.Connection, req: Requester, job_id: int | None) -> CancelOutcome:
        if job_id is None:
            active = jobs.active_jobs(conn, req.user_id)
            if not active:
                raise ServiceError("no_jobs", "You have no running or waiting jobs to cancel.")
            if len(active) > 1:
                raise ServiceError("which_job", _which_job(conn, active))
            job = active[0]
        else:
            job = jobs.get_job(conn, job_id)
            if job is None or job.user_id != req.user_id:
                raise ServiceError("no_job", f"You have no job #{job_id}; /status lists yours.")
        result = jobs.request_cancel(conn, job.id)
        if result not in ("cancelled", "requested"):
            raise ServiceError("job_finished", f"Job #{job.id} has already finished.")
        return CancelOutcome(job.id, job.kind, result, steps_done=job.step, label=job_label(conn, job))
