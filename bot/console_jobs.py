"""The console's jobs in the background: progress lines, finished notices and pictures written to `--out`.

Each followed job is one asyncio task that polls its row, so the prompt stays live while it runs. A finished job's
notice is delivered once (`jobs.claim_notice`), by whichever console sees it first; a console that was closed
meanwhile delivers it at its next start (`resume`), writing the pictures then. Nothing in `--out` is ever
overwritten: a name that exists gets a numbered sibling.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot import render
from bot.render import Style
from bot.services import Services
from storage import generations, jobs, subjects

log = logging.getLogger(__name__)

PLAIN = Style.PLAIN
MAX_NAME_TRIES = 10_000


@dataclass(frozen=True)
class JobAbout:
    """What a job is about, for its lines: a label, the trained subjects, or the generation."""

    label: str | None
    triggers: tuple[str, ...] = ()
    class_nouns: tuple[str, ...] = ()
    generation: generations.Generation | None = None


def job_about(conn: sqlite3.Connection, job: jobs.Job) -> JobAbout:
    if job.kind == "train":
        found = [subjects.get_subject(conn, sid, include_deleted=True) for sid in job.payload.get("subject_ids", [])]
        found = [s for s in found if s is not None]
        triggers = tuple(s.trigger for s in found)
        return JobAbout(", ".join(triggers) or None, triggers, tuple(s.class_noun for s in found))
    if job.kind == "generate":
        generation = generations.get_generation(conn, int(job.payload.get("generation_id", 0)))
        label = render.user_text(generation.prompt, 40, style=PLAIN) if generation else None
        return JobAbout(f'"{label}"' if label else None, generation=generation)
    return JobAbout(None)


def _load(conn: sqlite3.Connection, job_id: int) -> tuple[jobs.Job | None, JobAbout]:
    job = jobs.get_job(conn, job_id)
    return job, (job_about(conn, job) if job is not None else JobAbout(None))


def unique_path(folder: Path, stem: str, suffix: str) -> Path:
    """`folder/stem+suffix`, or `stem-2`, `stem-3`... for the first name nobody has taken, created empty here so
    nobody else takes it either."""
    for number in range(1, MAX_NAME_TRIES):
        path = folder / (f"{stem}{suffix}" if number == 1 else f"{stem}-{number}{suffix}")
        try:
            with open(path, "xb"):
                return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free file name for {stem}{suffix} in {folder}")


class JobFollower:
    def __init__(self, services: Services, out_dir: Path, say: Callable[[str], None], *, poll_s: float = 0.5,
                 progress_every_s: float = 10.0, job_timeout_s: float | None = None) -> None:
        self.services = services
        self.out_dir = Path(out_dir)
        self.say = say
        self.poll_s = poll_s
        self.progress_every_s = progress_every_s
        self.job_timeout_s = job_timeout_s
        self.tasks: dict[int, asyncio.Task] = {}
        self.files = None  # bot.console_files.ConsoleFiles: records the copies written, and per-job folders
        self.cancelled_here: set[int] = set()  # `cancel` already said so: no second "was cancelled" line

    # Following.
    def follow(self, job_id: int) -> asyncio.Task:
        task = self.tasks.get(job_id)
        if task is None or task.done():
            task = asyncio.create_task(self._follow(job_id), name=f"console-job-{job_id}")
            self.tasks[job_id] = task
        return task

    def following(self) -> list[int]:
        return sorted(job_id for job_id, task in self.tasks.items() if not task.done())

    async def wait(self, job_id: int) -> jobs.Job | None:
        return await asyncio.shield(self.follow(job_id))

    async def stop(self) -> None:
        tasks = [task for task in self.tasks.values() if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, job_id: int) -> jobs.Job | None:
        shown, shown_step, shown_at, waited = None, None, -math.inf, 0.0
        while True:
            job, about = await self.services.db.run(_load, job_id)
            if job is None:
                self.say(f"job #{job_id} is gone (deleted).")
                return None
            if job.finished:
                await self.deliver(job, about)
                return job
            stage = (job.state, job.message.split(" \u00b7 ")[0].split(" ")[0] if job.message else "")
            due = job.step != shown_step and time.monotonic() - shown_at >= self.progress_every_s
            if stage != shown or due:
                self.say(self._progress(job, about))
                shown, shown_step, shown_at = stage, job.step, time.monotonic()
            if self.job_timeout_s is not None and waited >= self.job_timeout_s:
                self.say(f"job #{job_id} is still not finished after {self.job_timeout_s:.0f} s; `status` shows it.")
                return job
            await asyncio.sleep(self.poll_s)
            waited += self.poll_s

    def _progress(self, job: jobs.Job, about: JobAbout) -> str:
        return render.progress_line(job.id, job.kind, job.state, job.step, job.total, job.message,
                                    eta_at=job.eta_at, started_at=job.started_at, label=about.label)

    # Delivering.
    async def deliver(self, job: jobs.Job, about: JobAbout | None = None) -> None:
        """The finished notice, once: pictures written to out/, or the trained adapter, or why it failed."""
        if not await self.services.db.run(jobs.claim_notice, job.id):
            return
        if about is None:
            _, about = await self.services.db.run(_load, job.id)
        if job.state == "failed":
            self.say(render.job_failed(job.kind, about.label, job.error, PLAIN) + f" (job #{job.id})")
        elif job.state == "cancelled":
            if job.id not in self.cancelled_here:
                self.say(f"job #{job.id} was cancelled.")
        elif job.kind == "train":
            self.say(render.training_done(about.triggers, about.class_nouns, job.result or {}, PLAIN))
        elif job.kind == "generate" and about.generation is not None:
            await self._deliver_pictures(job, about.generation)

    async def _deliver_pictures(self, job: jobs.Job, generation: generations.Generation) -> None:
        result = job.result or {}
        outputs = [p for p in result.get("outputs") or [] if p]
        self.say(render.generation_done(generation.prompt, result.get("seed", generation.seed), len(outputs),
                                        result.get("warnings") or (), generation.kind, PLAIN))
        folder = await self.files.folder_for(job.id, self.out_dir) if self.files else self.out_dir
        try:
            written = await asyncio.to_thread(self._write_outputs, result, generation.id, folder)
        except OSError as exc:
            self.say(f"error: could not write the pictures to {folder}: {exc.strerror or exc}.")
            return
        if self.files is not None:
            await self.files.record(generation.user_id, written, generation_id=generation.id)
        for path in written:
            self.say(f"wrote {path}")
        number = generation.id
        self.say(f"(generation {number}: `reroll {number}`, `variation {number} 1`, `upscale {number} 1`)")

    def _copy_out(self, rel: str, stem: str, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        source = self.services.store.resolve(rel)
        target = unique_path(folder, stem, source.suffix)
        try:
            with open(source, "rb") as reader, open(target, "wb") as writer:
                shutil.copyfileobj(reader, writer)
        except BaseException:
            target.unlink(missing_ok=True)  # only the name this call reserved
            raise
        return target

    def _write_outputs(self, result: dict, generation_id: int, folder: Path) -> list[Path]:
        outputs = [p for p in result.get("outputs") or [] if p]
        written = [self._copy_out(rel, f"gen{generation_id}-{n}", folder) for n, rel in enumerate(outputs, start=1)]
        for key in ("grid", "contact_sheet"):
            if result.get(key):
                written.append(self._copy_out(result[key], f"gen{generation_id}-{key.replace('_', '-')}", folder))
        return written

    # Across restarts.
    async def resume(self) -> None:
        """At start: deliver what finished while the console was closed, and follow what is still queued."""
        for job in await self.services.db.run(jobs.unannounced_local_jobs):
            _, about = await self.services.db.run(_load, job.id)
            if job.finished:
                self.say(f"job #{job.id} finished while the console was closed:")
                await self.deliver(job, about)
            else:
                self.say(f"Resuming job #{job.id} ({describe(job, about)}) from the last session; "
                         f"`cancel {job.id}` stops it, `wait {job.id}` waits for it.")
                self.follow(job.id)

    async def farewell(self, *, interrupted: bool) -> None:
        """Say which jobs stay queued and how to cancel them; stop following."""
        await self.stop()
        left = [job for job in await self.services.db.run(jobs.unannounced_local_jobs) if not job.finished]
        if not left:
            return
        head = "Interrupted. " if interrupted else ""
        self.say(f"{head}{len(left)} job(s) stay queued and continue the next time the console starts "
                 "(their pictures are written then):")
        for job in left:
            _, about = await self.services.db.run(_load, job.id)
            self.say(f"  job #{job.id}: {describe(job, about)}")
        self.say(f"To cancel one instead, start the console again and type `cancel {left[0].id}`.")


def describe(job: jobs.Job, about: JobAbout) -> str:
    title = render.KIND_TITLES.get(job.kind, job.kind).lower() + (f" {about.label}" if about.label else "")
    where = job.state
    if job.step:
        where += f", {job.step}/{job.total} steps done" if job.total else f", {job.step} steps done"
    return f"{title}, {where}"
