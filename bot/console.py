"""The console front end: the slash commands as terminal lines, against the same services and worker.

It reads one command per line (a terminal, a pipe or a test's list of lines), takes file paths instead of
attachments, writes output files under `--out`, and prints their paths. Commands that queue work wait for their
job by polling the jobs row and print progress lines. A malformed line or a refused request prints one line
starting with `error:` and the session goes on.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TextIO

from bot import render
from bot.console_parser import ParsedCommand, ParseError, help_text, parse_line
from bot.render import Style
from bot.services import Services
from bot.services.errors import ServiceError
from bot.services.types import ImagineOptions, Requester, Upload
from storage import forget, jobs

log = logging.getLogger(__name__)

PLAIN = Style.PLAIN
CONSOLE_GUILD_ID = 1  # the console is one local "server", so `share --server` means everyone at this console
CONSOLE_CHANNEL_ID = None  # no Discord channel: the bot's job watcher leaves console jobs alone
DEFAULT_USER_ID = 1


class ConsoleError(Exception):
    """A problem with the console request itself (e.g. a photo path that cannot be read)."""


class ConsoleSession:
    def __init__(self, services: Services, *, out_dir: Path, stdout: TextIO | None = None, waits: bool = True,
                 poll_s: float = 0.5, job_timeout_s: float | None = None) -> None:
        self.services = services
        self.out_dir = Path(out_dir)
        self.stdout = stdout or sys.stdout
        self.waits = waits  # False when no worker runs: queue and return
        self.poll_s = poll_s
        self.job_timeout_s = job_timeout_s
        self.user = Requester(DEFAULT_USER_ID, "you", CONSOLE_GUILD_ID, CONSOLE_CHANNEL_ID)
        self.handlers = {
            "help": self.do_help, "as": self.do_as, "whoami": self.do_whoami, "train": self.do_train,
            "train-family": self.do_train_family, "photos list": self.do_photos_list, "photos add": self.do_photos_add,
            "photos remove": self.do_photos_remove, "photos caption": self.do_photos_caption,
            "imagine": self.do_imagine, "reroll": self.do_derived, "variation": self.do_derived,
            "upscale": self.do_derived, "delete": self.do_delete, "headshots": self.do_headshots,
            "card": self.do_card, "share": self.do_share, "unshare": self.do_share, "subjects": self.do_subjects,
            "styles": self.do_styles, "status": self.do_status, "cancel": self.do_cancel, "wait": self.do_wait,
            "export": self.do_export, "forget": self.do_forget, "demo-photos": self.do_demo_photos,
            "admin queue": self.do_admin_queue, "admin add-style": self.do_add_style,
            "admin remove-style": self.do_remove_style, "admin limits": self.do_limits,
        }

    def say(self, text: str) -> None:
        print(text, file=self.stdout, flush=True)

    # The loop.
    async def run(self, lines: Iterable[str] | AsyncIterator[str]) -> int:
        if hasattr(lines, "__aiter__"):
            async for line in lines:  # type: ignore[union-attr]
                if not await self.execute(line):
                    break
        else:
            for line in lines:  # type: ignore[union-attr]
                if not await self.execute(line):
                    break
        return 0

    async def execute(self, line: str) -> bool:
        """Run one line. False means `quit`."""
        try:
            command = parse_line(line)
        except ParseError as exc:
            self.say(f"error: {exc}")
            return True
        if command is None:
            return True
        if command.verb == "quit":
            return False
        try:
            await self.handlers[command.verb](command)
        except ServiceError as exc:
            self.say(f"error: {exc.message}")
        except ConsoleError as exc:
            self.say(f"error: {exc}")
        except Exception:
            log.exception("console command %r failed", command.verb)
            self.say("error: something went wrong; the details are in the log above.")
        return True

    # Waiting for the worker.
    async def wait_for_job(self, job_id: int) -> jobs.Job | None:
        """Poll the job row, printing a line whenever its progress changes; None when not waiting."""
        if not self.waits:
            self.say(f"job #{job_id} is queued; no worker runs in this console (start one with `python -m trainer`).")
            return None
        db, last, waited = self.services.db, None, 0.0
        while True:
            job = await db.run(jobs.get_job, job_id)
            if job is None:
                self.say(f"job #{job_id} is gone (deleted).")
                return None
            shown = (job.state, job.step, job.message)
            if shown != last:
                self.say(render.progress_line(job.id, job.kind, job.state, job.step, job.total, job.message))
                last = shown
            if job.finished:
                return job
            if self.job_timeout_s is not None and waited >= self.job_timeout_s:
                raise ConsoleError(f"job #{job_id} did not finish within {self.job_timeout_s:.0f} s; see `status`.")
            await asyncio.sleep(self.poll_s)
            waited += self.poll_s

    def _failed(self, job: jobs.Job, label: str | None) -> bool:
        if job.state == "failed":
            self.say(render.job_failed(job.kind, label, job.error, PLAIN))
        elif job.state == "cancelled":
            self.say(f"job #{job.id} was cancelled.")
        return job.state != "succeeded"

    # Files.
    def _read_photos(self, paths: list[str], captions: list[str] | None) -> list[Upload]:
        captions = captions or []
        uploads = []
        for index, raw in enumerate(paths):
            path = Path(raw).expanduser()
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ConsoleError(f"cannot read photo {raw}: {exc.strerror or exc}.") from None
            caption = captions[index] if index < len(captions) else None
            uploads.append(Upload(filename=path.name, data=data, caption=caption))
        return uploads

    def _copy_out(self, rel: str, name: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        source = self.services.store.resolve(rel)
        target = self.out_dir / (name + source.suffix)
        shutil.copyfile(source, target)
        return target

    def _write_outputs(self, job: jobs.Job, generation_id: int) -> list[Path]:
        result = job.result or {}
        written = []
        outputs = [p for p in result.get("outputs") or [] if p]
        for number, rel in enumerate(outputs, start=1):
            written.append(self._copy_out(rel, f"gen{generation_id}-{number}"))
        for key in ("grid", "contact_sheet"):
            if result.get(key):
                written.append(self._copy_out(result[key], f"gen{generation_id}-{key.replace('_', '-')}"))
        return written

    # Training.
    async def do_train(self, cmd: ParsedCommand) -> None:
        uploads = await asyncio.to_thread(self._read_photos, cmd.get("photos"), cmd.get("caption"))
        outcome = await self.services.training.start(self.user, cmd.get("trigger"), cmd.get("class") or "person",
                                                     cmd.get("name"), uploads, cmd.get("family"))
        await self._after_training(outcome)

    async def do_train_family(self, cmd: ParsedCommand) -> None:
        await self._after_training(await self.services.training.train_family(self.user, cmd.get("group")))

    async def _after_training(self, outcome) -> None:
        self.say(render.train_outcome(outcome, PLAIN))
        if outcome.job_id is None:
            return
        job = await self.wait_for_job(outcome.job_id)
        triggers = [s.trigger for s in outcome.subjects]
        if job is not None and not self._failed(job, ", ".join(triggers)):
            self.say(render.training_done(triggers, [s.class_noun for s in outcome.subjects], job.result or {}, PLAIN))

    async def do_photos_list(self, cmd: ParsedCommand) -> None:
        photos = await self.services.photos.list(self.user, cmd.get("subject"))
        self.say(render.photo_list(cmd.get("subject"), photos, PLAIN))

    async def do_photos_add(self, cmd: ParsedCommand) -> None:
        uploads = await asyncio.to_thread(self._read_photos, cmd.get("photos"), cmd.get("caption"))
        await self._after_training(await self.services.photos.add(self.user, cmd.get("subject"), uploads))

    async def do_photos_remove(self, cmd: ParsedCommand) -> None:
        await self.services.photos.remove(self.user, cmd.get("subject"), cmd.get("number"))
        self.say(f"removed photo {cmd.get('number')} of {cmd.get('subject')}.")

    async def do_photos_caption(self, cmd: ParsedCommand) -> None:
        text = " ".join(cmd.get("text") or [])
        await self.services.photos.caption(self.user, cmd.get("subject"), cmd.get("number"), text)
        self.say(f"caption of photo {cmd.get('number')} updated.")

    # Generating.
    async def _after_generation(self, queued) -> None:
        self.say(render.queued_generation(queued, PLAIN))
        job = await self.wait_for_job(queued.job_id)
        if job is None or self._failed(job, render.user_text(queued.prompt, 40, style=PLAIN)):
            return
        result = job.result or {}
        self.say(render.generation_done(queued.prompt, result.get("seed", queued.seed), queued.count,
                                        result.get("warnings") or (), queued.kind, PLAIN))
        for path in await asyncio.to_thread(self._write_outputs, job, queued.generation_id):
            self.say(f"wrote {path}")
        self.say(f"(generation {queued.generation_id}: `reroll {queued.generation_id}`, "
                 f"`variation {queued.generation_id} 1`, `upscale {queued.generation_id} 1`)")

    async def do_imagine(self, cmd: ParsedCommand) -> None:
        options = ImagineOptions(
            prompt=" ".join(cmd.get("prompt")), negative_prompt=cmd.get("negative"), seed=cmd.get("seed"),
            aspect=cmd.get("aspect"), count=cmd.get("count"), steps=cmd.get("steps"),
            guidance=cmd.get("guidance"), scheduler=cmd.get("scheduler"), style=cmd.get("style"))
        await self._after_generation(await self.services.imagine.imagine(self.user, options))

    async def do_derived(self, cmd: ParsedCommand) -> None:
        imagine, generation = self.services.imagine, cmd.get("generation")
        if cmd.verb == "reroll":
            queued = await imagine.reroll(self.user, generation)
        elif cmd.verb == "variation":
            queued = await imagine.variation(self.user, generation, cmd.get("index", 1))
        else:
            queued = await imagine.upscale(self.user, generation, cmd.get("index", 1))
        await self._after_generation(queued)

    async def do_delete(self, cmd: ParsedCommand) -> None:
        await self.services.imagine.delete(self.user, cmd.get("generation"))
        self.say(f"deleted generation {cmd.get('generation')} and its files.")

    async def do_headshots(self, cmd: ParsedCommand) -> None:
        await self._after_generation(await self.services.imagine.headshots(self.user, cmd.get("subject"),
                                                                           cmd.get("count")))

    async def do_card(self, cmd: ParsedCommand) -> None:
        if not cmd.get("greeting"):
            raise ConsoleError("a card needs --greeting TEXT.")
        queued = await self.services.imagine.card(self.user, " ".join(cmd.get("prompt")), cmd.get("greeting"),
                                                  cmd.get("layout"))
        await self._after_generation(queued)

    # Sharing and jobs.
    async def do_share(self, cmd: ParsedCommand) -> None:
        user_id, server = cmd.get("user"), bool(cmd.get("server"))
        if (user_id is None) == (not server):
            raise ConsoleError("give either --user ID or --server.")
        sharing = self.services.sharing
        action = sharing.unshare if cmd.verb == "unshare" else sharing.share
        outcome = await action(self.user, cmd.get("subject"), user_id, CONSOLE_GUILD_ID if server else None)
        self.say(render.share_outcome(outcome, unshare=cmd.verb == "unshare", style=PLAIN))

    async def do_subjects(self, cmd: ParsedCommand) -> None:
        self.say(render.subjects_view(await self.services.sharing.subjects(self.user), PLAIN))

    async def do_styles(self, cmd: ParsedCommand) -> None:
        names = await self.services.imagine.style_choices("")
        self.say("styles: " + (", ".join(names) if names else "(none installed)"))

    async def do_status(self, cmd: ParsedCommand) -> None:
        self.say(render.jobs_view(await self.services.jobs.status(self.user), PLAIN))

    async def do_cancel(self, cmd: ParsedCommand) -> None:
        self.say(render.cancel_outcome(await self.services.jobs.cancel(self.user, cmd.get("job"))))

    async def do_wait(self, cmd: ParsedCommand) -> None:
        active = await self.services.db.run(jobs.active_jobs)
        if not active:
            self.say("the queue is idle.")
            return
        for job in active:
            await self.wait_for_job(job.id)
        await self.do_wait(cmd)

    # Account.
    async def do_export(self, cmd: ParsedCommand) -> None:
        bundle = await self.services.account.export(self.user, cmd.get("subject"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        target = self.out_dir / bundle.filename
        await asyncio.to_thread(shutil.copyfile, bundle.path, target)
        self.say(render.export_bundle(bundle, sent_to=f"written to {target}", style=PLAIN))

    async def do_forget(self, cmd: ParsedCommand) -> None:
        if not cmd.get("yes"):
            raise ConsoleError("this deletes everything stored about you; run `forget --yes` to confirm.")
        outcome = await self.services.account.forget(self.user)
        await self.services.db.run(forget.sweep_forgotten, self.services.store)
        self.say(render.forget_outcome(outcome))

    # Identity, help, admin.
    async def do_as(self, cmd: ParsedCommand) -> None:
        user_id = cmd.get("user_id")
        if user_id is None or user_id <= 0:
            raise ConsoleError("a user id is a positive whole number, e.g. `as 2`.")
        self.user = Requester(user_id, cmd.get("name") or f"user {user_id}", CONSOLE_GUILD_ID, CONSOLE_CHANNEL_ID)
        self.say(f"now acting as user {user_id} ({self.user.display_name}).")

    async def do_whoami(self, cmd: ParsedCommand) -> None:
        self.say(f"user {self.user.user_id} ({self.user.display_name})")

    async def do_help(self, cmd: ParsedCommand) -> None:
        self.say(help_text(" ".join(cmd.get("topic") or []) or None))

    async def do_demo_photos(self, cmd: ParsedCommand) -> None:
        for path in await asyncio.to_thread(write_demo_photos, Path(cmd.get("dir"))):
            self.say(f"wrote {path}")

    async def do_admin_queue(self, cmd: ParsedCommand) -> None:
        self.say(render.jobs_view(await self.services.jobs.queue(self.user), PLAIN, with_owner=True))

    async def do_add_style(self, cmd: ParsedCommand) -> None:
        upload = (await asyncio.to_thread(self._read_photos, [cmd.get("file")], None))[0]
        info = await self.services.admin.add_style(self.user, cmd.get("name"), upload, cmd.get("weight"))
        self.say("installed: " + render.styles_list([info], PLAIN).lstrip("\u2022 "))

    async def do_remove_style(self, cmd: ParsedCommand) -> None:
        await self.services.admin.remove_style(self.user, cmd.get("name"))
        self.say(f"removed the style {cmd.get('name')}.")

    async def do_limits(self, cmd: ParsedCommand) -> None:
        self.say(render.limits_view(await self.services.admin.limits(self.user)))


def demo_photo_jpegs() -> list[tuple[str, bytes]]:
    """Two real face photos from scikit-image's bundled data, as (file name, JPEG bytes)."""
    import io

    from PIL import Image
    from skimage import data

    photos = []
    for name, pixels in (("astronaut.jpg", data.astronaut()), ("camera.jpg", data.camera())):
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert("RGB").save(buffer, format="JPEG", quality=92)
        photos.append((name, buffer.getvalue()))
    return photos


def write_demo_photos(folder: Path) -> list[Path]:
    """The demo photos as files, so a newcomer can try training without selfies."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, jpeg in demo_photo_jpegs():
        path = folder / name
        path.write_bytes(jpeg)
        written.append(path)
    return written


async def stdin_lines(stream: TextIO, out: TextIO) -> AsyncIterator[str]:
    """Lines from stdin without blocking the event loop; shows a prompt on a terminal.

    A daemon thread reads, so a signal can end the session while the thread still waits for a line."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    wanted = threading.Event()
    interactive = stream.isatty()

    def read() -> None:
        while wanted.wait():
            wanted.clear()
            if interactive:
                print("likeness> ", end="", file=out, flush=True)
            line = stream.readline()
            loop.call_soon_threadsafe(queue.put_nowait, line or None)
            if not line:
                return

    threading.Thread(target=read, name="console-stdin", daemon=True).start()
    while True:
        wanted.set()
        line = await queue.get()
        if line is None:
            return
        yield line
