"""The console front end: the slash commands as terminal lines, against the same services and worker.

It reads one command per line (a terminal, a pipe, a `--script` file or a test's list of lines), takes file paths
instead of attachments, writes output files under `--out`, and prints their paths. At a terminal the prompt stays
live: jobs run in the background (bot.console_jobs) and their progress and results print above the prompt
(prompt_toolkit's patch_stdout); `wait [JOB]` blocks on purpose. Scripts and pipes keep their sequential meaning:
a line waits for its job unless it ends with `&`. A malformed line or a refused request prints one line starting
with `error:` and the session goes on. Messages name console commands (bot.services.verbs), never slash commands.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import TextIO

from bot import render
from bot.console_files import ConsoleFiles
from bot.console_input import Interrupted, stdin_lines, terminal_lines  # noqa: F401 (the entry point's imports)
from bot.console_jobs import JobFollower, copy_out
from bot.console_parser import ParsedCommand, ParseError, help_text, parse_line
from bot.demo_photos import write_demo_photos
from bot.render import Style
from bot.services import Services
from bot.services.errors import ServiceError
from bot.services.training import TrainRequest
from bot.services.types import ImagineOptions, Requester, Upload
from bot.services.verbs import for_console
from storage import forget, jobs, subjects
from storage.disk import DISK_FULL, describe_free, is_disk_full
from storage.settings import Settings

log = logging.getLogger(__name__)

PLAIN = Style.PLAIN
# Older versions' grants to "this server" (everyone at this console) still count; `unshare --server` takes them back.
CONSOLE_GUILD_ID = 1
CONSOLE_CHANNEL_ID = None  # no Discord channel: the bot's job watcher leaves console jobs alone
DEFAULT_USER_ID = 1  # the console's operator, who runs the host: an admin (operator_settings)
ADMIN_HINT = "In the console, user 1 (the operator) is an admin: `as 1`."
INTERRUPTED = 130  # the exit status of a program stopped by Ctrl-C


def operator_settings(settings: Settings) -> Settings:
    """The console's settings: its operator (user 1) runs the host, so it is an admin like LIKENESS_ADMIN_USER_IDS."""
    if settings.is_admin(DEFAULT_USER_ID):
        return settings
    return settings.model_copy(update={"admin_user_ids": [*settings.admin_user_ids, DEFAULT_USER_ID]})


class ConsoleError(Exception):
    """A problem with the console request itself (e.g. a photo path that cannot be read)."""


class ConsoleSession:
    def __init__(self, services: Services, *, out_dir: Path, stdout: TextIO | None = None, waits: bool = True,
                 background: bool = False, poll_s: float = 0.5, progress_every_s: float = 10.0,
                 job_timeout_s: float | None = None) -> None:
        self.services = services
        self.out_dir = Path(out_dir)
        self._stdout = stdout  # None: sys.stdout at the time of printing (patched while the prompt is live)
        self.waits = waits  # False when no worker runs: queue and go on
        self.background = background  # True at a terminal: no line waits for its job
        self.jobs = JobFollower(services, self.out_dir, self.say, poll_s=poll_s, progress_every_s=progress_every_s,
                                job_timeout_s=job_timeout_s)
        self.files = ConsoleFiles(services.db)
        self.jobs.files = self.files
        self._resumed = False
        self.user = Requester(DEFAULT_USER_ID, "you", CONSOLE_GUILD_ID, CONSOLE_CHANNEL_ID)
        self._names: dict[int, str] = {DEFAULT_USER_ID: "you"}  # `as N --name X` is remembered
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

    @property
    def stdout(self) -> TextIO:
        return self._stdout or sys.stdout

    def say(self, text: str) -> None:
        print(for_console(text), file=self.stdout, flush=True)

    # The loop.
    async def run(self, lines: Iterable[str] | AsyncIterator[str]) -> int:
        """Run the lines; 0 at their end or `quit`, INTERRUPTED after Ctrl-C. Jobs still running are left to
        `finish`, so a test may run several batches of lines against one session."""
        if not self._resumed:
            self._resumed = True
            await self.jobs.resume()
            self._say_removal(await self.files.remove_orphans())  # e.g. a forget that finished meanwhile
        try:
            if hasattr(lines, "__aiter__"):
                async for line in lines:  # type: ignore[union-attr]
                    if not await self.execute(line):
                        break
            else:
                for line in lines:  # type: ignore[union-attr]
                    if not await self.execute(line):
                        break
        except Interrupted:
            return INTERRUPTED
        finally:
            if hasattr(lines, "aclose"):
                await lines.aclose()  # leaves the live prompt (and its patched stdout) now, not at garbage collection
        return 0

    async def finish(self, *, interrupted: bool = False) -> None:
        """Leaving: say which jobs stay queued (and how to cancel them), stop following them."""
        await self.jobs.farewell(interrupted=interrupted)

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
            self.say(f"error: {exc.message}" + (f" {ADMIN_HINT}" if exc.code == "admins_only" else ""))
        except ConsoleError as exc:
            self.say(f"error: {exc}")
        except Exception as exc:
            if is_disk_full(exc):  # the host is at this console: say how much room there is
                self.say(f"error: {DISK_FULL} ({describe_free(self.services.settings.data_dir)}; nothing was "
                         "left half-written)")
                return True
            log.exception("console command %r failed", command.verb)
            self.say("error: something went wrong; the details are in the log above.")
        return True

    # Jobs.
    async def _start_following(self, job_id: int, cmd: ParsedCommand) -> None:
        """Follow the new job in the background; a script line (not ending in `&`) waits for it."""
        if not self.waits:
            self.say(f"job #{job_id} is queued; no worker runs in this console (start one with `python -m trainer`,"
                     f" then `wait {job_id}`).")
            return
        self.jobs.follow(job_id)
        if not self.background and not cmd.background:
            await self.jobs.wait(job_id)

    # Files.
    def _read_photos(self, paths: list[str], captions: list[str] | None, what: str = "photo") -> list[Upload]:
        captions = captions or []
        uploads = []
        for index, raw in enumerate(expand_paths(paths)):
            path = Path(raw).expanduser()
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ConsoleError(f"cannot read the {what} {raw}: {exc.strerror or exc}.") from None
            caption = captions[index] if index < len(captions) else None
            uploads.append(Upload(filename=path.name, data=data, caption=caption))
        return uploads

    def _folder(self, cmd: ParsedCommand) -> Path | None:
        """The command's own --out folder (created now, so a bad one is refused before anything is queued)."""
        raw = cmd.get("out")
        if raw is None:
            return None
        folder = Path(raw).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConsoleError(f"cannot use {raw} as the output folder: {exc.strerror or exc}.") from None
        return folder

    def _say_removal(self, removal, prefix: str = "") -> None:
        text = removal.summary(f"{self.out_dir}/")
        if text:
            self.say(prefix + text)

    # Training.
    async def do_train(self, cmd: ParsedCommand) -> None:
        if not cmd.get("photos") and not cmd.get("subject"):
            raise ConsoleError("give the photo files, or `--subject TRIGGER` to retrain from the stored photos "
                               "(e.g. `train --subject rraj`).")
        if cmd.get("subject") and cmd.get("trigger"):
            raise ConsoleError("give either --subject (retrain a subject) or --trigger (a new one), not both.")
        uploads = await asyncio.to_thread(self._read_photos, cmd.get("photos") or [], cmd.get("caption"))
        request = TrainRequest(trigger=cmd.get("trigger"), class_noun=cmd.get("class") or "person",
                               display_name=cmd.get("name"), uploads=tuple(uploads), family_group=cmd.get("family"),
                               subject=cmd.get("subject"))
        await self._after_training(await self.services.training.start(self.user, request), cmd)

    async def do_train_family(self, cmd: ParsedCommand) -> None:
        await self._after_training(await self.services.training.train_family(self.user, cmd.get("group")), cmd)

    async def _after_training(self, outcome, cmd: ParsedCommand) -> None:
        self.say(render.train_outcome(outcome, PLAIN))
        if outcome.job_id is not None:
            await self._start_following(outcome.job_id, cmd)

    async def do_photos_list(self, cmd: ParsedCommand) -> None:
        photos = await self.services.photos.list(self.user, cmd.get("subject"))
        self.say(render.photo_list(cmd.get("subject"), photos, PLAIN))

    async def do_photos_add(self, cmd: ParsedCommand) -> None:
        uploads = await asyncio.to_thread(self._read_photos, cmd.get("photos"), cmd.get("caption"))
        await self._after_training(await self.services.photos.add(self.user, cmd.get("subject"), uploads), cmd)

    async def do_photos_remove(self, cmd: ParsedCommand) -> None:
        await self.services.photos.remove(self.user, cmd.get("subject"), cmd.get("number"))
        self.say(f"removed photo {cmd.get('number')} of {cmd.get('subject')}.")

    async def do_photos_caption(self, cmd: ParsedCommand) -> None:
        text = " ".join(cmd.get("text") or [])
        await self.services.photos.caption(self.user, cmd.get("subject"), cmd.get("number"), text)
        self.say(f"caption of photo {cmd.get('number')} updated.")

    # Generating.
    async def _after_generation(self, queued, cmd: ParsedCommand, folder: Path | None = None) -> None:
        if folder is not None:
            await self.files.set_folder(queued.job_id, folder)
        self.say(render.queued_generation(queued, PLAIN))
        await self._start_following(queued.job_id, cmd)

    async def do_imagine(self, cmd: ParsedCommand) -> None:
        options = ImagineOptions(
            prompt=" ".join(cmd.get("prompt")), negative_prompt=cmd.get("negative"), seed=cmd.get("seed"),
            aspect=cmd.get("aspect"), count=cmd.get("count"), steps=cmd.get("steps"),
            guidance=cmd.get("guidance"), scheduler=cmd.get("scheduler"), style=cmd.get("style"))
        folder = self._folder(cmd)
        await self._after_generation(await self.services.imagine.imagine(self.user, options), cmd, folder)

    async def do_derived(self, cmd: ParsedCommand) -> None:
        imagine, generation, folder = self.services.imagine, cmd.get("generation"), self._folder(cmd)
        if cmd.verb == "reroll":
            queued = await imagine.reroll(self.user, generation)
        elif cmd.verb == "variation":
            queued = await imagine.variation(self.user, generation, cmd.get("index", 1))
        else:
            queued = await imagine.upscale(self.user, generation, cmd.get("index", 1))
        await self._after_generation(queued, cmd, folder)

    async def do_delete(self, cmd: ParsedCommand) -> None:
        deleted = await self.services.imagine.delete(self.user, cmd.get("generation"))
        stopped = " Its job was still waiting or running, and was stopped." if deleted.job_cancelled else ""
        self.say(f"Deleted generation {deleted.generation_id} and its stored files.{stopped}")
        self._say_removal(await self.files.remove_orphans())

    async def do_headshots(self, cmd: ParsedCommand) -> None:
        folder = self._folder(cmd)
        queued = await self.services.imagine.headshots(self.user, cmd.get("subject"), cmd.get("count"))
        await self._after_generation(queued, cmd, folder)

    async def do_card(self, cmd: ParsedCommand) -> None:
        if not cmd.get("greeting"):
            raise ConsoleError("a card needs --greeting TEXT.")
        folder = self._folder(cmd)
        queued = await self.services.imagine.card(self.user, " ".join(cmd.get("prompt")), cmd.get("greeting"),
                                                  cmd.get("layout"))
        await self._after_generation(queued, cmd, folder)

    # Sharing and jobs.
    async def do_share(self, cmd: ParsedCommand) -> None:
        user_id, server = cmd.get("user"), bool(cmd.get("server"))
        if server and cmd.verb == "share":
            raise ConsoleError(f"the console has no server to share with; share with one person: "
                               f"`share {cmd.get('subject')} --user 2`.")
        if (user_id is None) == (not server):
            raise ConsoleError("give --user ID, the local user to share with (e.g. `--user 2`).")
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
        outcome = await self.services.jobs.cancel(self.user, cmd.get("job"))
        self.jobs.cancelled_here.add(outcome.job_id)  # this line is the one message about it
        self.say(render.cancel_outcome(outcome))

    async def do_wait(self, cmd: ParsedCommand) -> None:
        job_id = cmd.get("job")
        if job_id is not None:
            job = await self.services.db.run(jobs.get_job, job_id)
            if job is None or job.user_id != self.user.user_id:
                raise ConsoleError(f"you have no job #{job_id}; `status` lists yours.")
            if job.finished and job.notified:
                self.say(f"job #{job_id} has already finished ({job.state}).")
                return
            await self.jobs.wait(job_id)
            return
        mine = [job.id for job in await self.services.db.run(jobs.active_jobs, self.user.user_id)]
        if not mine:
            self.say("Nothing of yours is running or queued.")
            return
        for job_id in mine:
            await self.jobs.wait(job_id)
        await self.do_wait(cmd)

    # Account.
    async def do_export(self, cmd: ParsedCommand) -> None:
        folder = self._folder(cmd) or self.out_dir
        bundle = await self.services.account.export(self.user, cmd.get("subject"))
        name = Path(bundle.filename)
        target = await asyncio.to_thread(copy_out, bundle.path, folder, name.stem, name.suffix)
        await self.files.record(self.user.user_id, [target], subject_id=bundle.subject_id)
        self.say(render.export_bundle(bundle, sent_to=f"written to {target}", style=PLAIN))

    async def do_forget(self, cmd: ParsedCommand) -> None:
        if not cmd.get("yes"):
            raise ConsoleError("this deletes everything stored about you and the files the console wrote for you; "
                               "run `forget --yes` to confirm.")
        copies = await self.files.remove_for_user(self.user.user_id)
        outcome = await self.services.account.forget(self.user)
        await self.services.db.run(forget.sweep_forgotten, self.services.store)
        self.say(render.forget_outcome(outcome))
        self._say_removal(copies + await self.files.remove_orphans())  # + others' pictures that showed this user

    # Identity, help, admin.
    async def do_as(self, cmd: ParsedCommand) -> None:
        user_id = cmd.get("user_id")
        if user_id is None or user_id <= 0:
            raise ConsoleError("a user id is a positive whole number, e.g. `as 2`.")
        name = " ".join((cmd.get("name") or "").split())[:64]
        if name:
            self._names[user_id] = name
        else:
            name = self._names.get(user_id) or await self.services.db.run(_stored_name, user_id) or f"user {user_id}"
        self.user = Requester(user_id, name, CONSOLE_GUILD_ID, CONSOLE_CHANNEL_ID)
        self.say(f"now acting as user {user_id} ({self.user.display_name}).")

    async def do_whoami(self, cmd: ParsedCommand) -> None:
        self.say(f"user {self.user.user_id} ({self.user.display_name})")

    async def do_help(self, cmd: ParsedCommand) -> None:
        self.say(help_text(" ".join(cmd.get("topic") or []) or None))

    async def do_demo_photos(self, cmd: ParsedCommand) -> None:
        for path in await asyncio.to_thread(write_demo_photos, Path(cmd.get("dir")).expanduser()):
            self.say(f"wrote {path}")

    async def do_admin_queue(self, cmd: ParsedCommand) -> None:
        self.say(render.jobs_view(await self.services.jobs.queue(self.user), PLAIN, with_owner=True))
        nodes = await self.services.admin.cluster_nodes(self.user)
        if nodes is not None:
            self.say(render.cluster_view(nodes, PLAIN))

    async def do_add_style(self, cmd: ParsedCommand) -> None:
        upload = (await asyncio.to_thread(self._read_photos, [cmd.get("file")], None, "style file"))[0]
        info = await self.services.admin.add_style(self.user, cmd.get("name"), upload, cmd.get("weight"))
        self.say("installed: " + render.styles_list([info], PLAIN).lstrip("\u2022 "))

    async def do_remove_style(self, cmd: ParsedCommand) -> None:
        await self.services.admin.remove_style(self.user, cmd.get("name"))
        self.say(f"removed the style {cmd.get('name')}.")

    async def do_limits(self, cmd: ParsedCommand) -> None:
        self.say(render.limits_view(await self.services.admin.limits(self.user)))


def _stored_name(conn, user_id: int) -> str | None:
    """The name a local user was given in an earlier session (`as 2 --name Mia`), if any."""
    row = conn.execute("SELECT display_name FROM users WHERE id = ?", (user_id,)).fetchone()
    return row[0] if row and row[0] and not subjects.is_forgotten(conn, user_id) else None


def expand_paths(paths: list[str]) -> list[str]:
    """Shell-style wildcards in photo paths (`photos/*.jpg`), sorted; a path that exists as typed stays as it is."""
    expanded: list[str] = []
    for raw in paths:
        matches = sorted(glob.glob(os.path.expanduser(raw))) if glob.has_magic(raw) else []
        expanded += matches if matches and not Path(raw).expanduser().exists() else [raw]
    return expanded
