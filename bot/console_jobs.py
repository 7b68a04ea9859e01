"""The console's jobs in the background: progress lines, finished notices and pictures written to `--out`.

Each followed job is one asyncio task that polls its row, so the prompt stays live while it runs. A finished job's
notice is marked delivered (`jobs.claim_notice`) only once it is out, its pictures written; a console that was
closed meanwhile, or could not write them (a full disk), delivers it at its next start (`resume`). Nothing in
`--out` is ever overwritten (a name that exists gets a numbered sibling) or left half-written.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot import render
from bot.render import Style
from bot.services import Services
from storage import generations, jobs, subjects
from storage.disk import describe_free, is_disk_full

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


def copy_out(source: Path, folder: Path, stem: str, suffix: str) -> Path:
    """Copy `source` into `folder` under the first free name (see unique_path). The copy is made under a hidden
    temporary name and only then given its name, so a full disk or a crash never leaves a partial file."""
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{stem}{suffix}.part-{uuid.uuid4().hex[:8]}"
    try:
        with open(source, "rb") as reader, open(temp, "wb") as writer:
            shutil.copyfileobj(reader, writer)
            writer.flush()
            os.fsync(writer.fileno())
        target = unique_path(folder, stem, suffix)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


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
        self._delivering: set[int] = set()
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
        """The finished notice: pictures written to out/, or the trained adapter, or why it failed. It is marked
        delivered only once it is out (pictures written), so a failed write is tried again at the next start."""
        if job.id in self._delivering:
            return
        self._delivering.add(job.id)
        try:
            current = await self.services.db.run(jobs.get_job, job.id)
            if current is None or current.notified or not current.finished:
                return
            if about is None:
                _, about = await self.services.db.run(_load, job.id)
            if await self._say_outcome(current, about):
                await self.services.db.run(jobs.claim_notice, job.id)
        finally:
            self._delivering.discard(job.id)

    async def _say_outcome(self, job: jobs.Job, about: JobAbout) -> bool:
        """Print the notice; False when its pictures could not be written (it stays undelivered)."""
        if job.state == "failed":
            self.say(render.job_failed(job.kind, about.label, job.error, PLAIN) + f" (job #{job.id})")
        elif job.state == "cancelled":
            if job.id not in self.cancelled_here:
                self.say(f"job #{job.id} was cancelled.")
        elif job.kind == "train":
            self.say(render.training_done(about.triggers, about.class_nouns, job.result or {}, PLAIN))
        elif job.kind == "generate" and about.generation is not None:
            return await self._deliver_pictures(job, about.generation)
        return True

    async def _deliver_pictures(self, job: jobs.Job, generation: generations.Generation) -> bool:
        result = job.result or {}
        outputs = [p for p in result.get("outputs") or [] if p]
        self.say(render.generation_done(generation.prompt, result.get("seed", generation.seed), len(outputs),
                                        result.get("warnings") or (), generation.kind, PLAIN))
        folder = await self.files.folder_for(job.id, self.out_dir) if self.files else self.out_dir
        try:
            written = await asyncio.to_thread(self._write_outputs, result, generation.id, folder)
        except OSError as exc:
            reason = f"the disk is full ({describe_free(folder)})" if is_disk_full(exc, folder) else (
                exc.strerror or str(exc))
            self.say(f"error: could not write the pictures to {folder}: {reason}. They are written the next "
                     "time the console starts.")
            return False
        if self.files is not None:
            await self.files.record(generation.user_id, written, generation_id=generation.id)
        for path in written:
            self.say(f"wrote {path}")
        number = generation.id
        self.say(f"(generation {number}: `reroll {number}`, `variation {number} 1`, `upscale {number} 1`)")
        return True

    def _copy_out(self, rel: str, stem: str, folder: Path) -> Path:
        source = self.services.store.resolve(rel)
        return copy_out(source, folder, stem, source.suffix)

    def _write_outputs(self, result: dict, generation_id: int, folder: Path) -> list[Path]:
        """Every picture of the result, or none: a failed write removes the ones written before it."""
        named = [(rel, f"gen{generation_id}-{n}") for n, rel in enumerate(
            [p for p in result.get("outputs") or [] if p], start=1)]
        named += [(result[key], f"gen{generation_id}-{key.replace('_', '-')}") for key in ("grid", "contact_sheet")
                  if result.get(key)]
        written: list[Path] = []
        try:
            for rel, stem in named:
                written.append(self._copy_out(rel, stem, folder))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
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
