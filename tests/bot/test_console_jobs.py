"""The console's job lifecycle: a prompt that stays live while jobs run, an honest Ctrl-C, resuming at the next
start, and ids and output files that are never reused. The worker's side is played by QueueDriver."""

import asyncio
import io
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from bot.console import INTERRUPTED, ConsoleSession, terminal_lines
from bot.services import Services
from storage import jobs
from storage.db import AsyncDatabase
from storage.files import FileStore
from tests.bot.conftest import make_settings
from tests.bot.queue_driver import QueueDriver
from tests.bot.services.conftest import add_fake_photos, add_subject

REPO = Path(__file__).resolve().parents[2]


class Console:
    def __init__(self, services: Services, out_dir: Path, *, background: bool) -> None:
        self.stdout = io.StringIO()
        self.session = ConsoleSession(services, out_dir=out_dir, stdout=self.stdout, waits=True,
                                      background=background, poll_s=0.05, progress_every_s=0, job_timeout_s=120)

    async def run(self, *lines: str) -> str:
        start = self.stdout.tell()
        await self.session.run(lines)
        return self.stdout.getvalue()[start:]

    def printed(self) -> str:
        return self.stdout.getvalue()


@pytest.fixture
async def parts(tmp_path):
    settings = make_settings(tmp_path, allowed_guild_ids=[])
    db = await AsyncDatabase.open(settings.database_path)
    services = Services.build(settings, db, FileStore(settings.store_dir))
    driver = QueueDriver(settings)
    yield settings, services, driver
    driver.close()
    await db.close()


def stored_subject(conn, photos: int = 2, owner: int = 1):
    """`rraj` with photos already stored, so `train --subject rraj` queues training without any intake."""
    subject = add_subject(conn, owner, "rraj")
    add_fake_photos(conn, subject, photos)
    return subject


def queued_ids(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"queued as job #(\d+)", text)]


async def test_imagine_and_status_answer_while_a_training_job_runs(parts, tmp_path):
    settings, services, driver = parts
    out = tmp_path / "out"
    await services.db.run(stored_subject)
    console = Console(services, out, background=True)
    printed = await console.run("train --subject rraj")
    assert "Training queued as job #1" in printed
    train = driver.claim(("train",))
    driver.progress(train, 1, 4, message="Training step 1/4")

    printed = await console.run('imagine "a red apple on a table" --count 2', "status")
    assert "Images queued as job #2" in printed
    assert re.search(r"#1 Training rraj: running .* 1/4", printed), printed
    assert "#2 Generating: queued" in printed
    assert (await services.db.run(jobs.get_job, train.id)).state == "running"  # both answered mid-job

    driver.finish_generation(driver.claim(("generate",)))
    await console.run("wait 2")
    assert sorted(p.name for p in out.iterdir()) == ["gen1-1.png", "gen1-2.png", "gen1-grid.png"]
    assert (await services.db.run(jobs.get_job, train.id)).state == "running"
    assert "is trained" not in console.printed()
    assert re.search(r"job #1 training rraj: running .*1/4.*ETA", console.printed()), console.printed()

    driver.progress(train, 4, 4, message="Training step 4/4")
    driver.finish_training(train)
    printed = await console.run("wait 1")
    assert "\u2705 rraj is trained" in console.printed()
    assert "nothing of yours is running" not in printed.lower()
    await console.session.finish()


async def test_the_live_prompt_runs_lines_while_a_job_waits_and_ctrl_c_says_what_stays_queued(parts, tmp_path):
    settings, services, driver = parts
    console = Console(services, tmp_path / "out", background=True)
    with create_pipe_input() as keys:
        keys.send_text('imagine "a red apple"\r')
        keys.send_text("status\r")
        keys.send_text("\x03")  # Ctrl-C
        code = await console.session.run(terminal_lines(keys=keys, screen=DummyOutput()))
    assert code == INTERRUPTED
    await console.session.finish(interrupted=True)
    printed = console.printed()
    assert "Images queued as job #1" in printed and "#1 Generating: queued" in printed
    assert "Interrupted. 1 job(s) stay queued" in printed and "`cancel 1`" in printed
    assert (await services.db.run(jobs.get_job, 1)).state == "queued"


async def test_a_script_line_waits_for_its_job_unless_it_ends_with_an_ampersand(parts, tmp_path):
    settings, services, driver = parts
    console = Console(services, tmp_path / "out", background=False)

    async def finish_when_queued():
        while not (queued := await services.db.run(jobs.active_jobs)):
            await asyncio.sleep(0.02)
        driver.finish_generation(driver.claim(("generate",)))
        return queued[0].id

    finisher = asyncio.create_task(finish_when_queued())
    printed = await console.run('imagine "a red apple"', "status")
    assert await finisher == 1
    assert printed.index("wrote ") < printed.index("No jobs right now.")  # the line waited for its job

    printed = await console.run('imagine "a green apple" &', "status")
    assert "#2 Generating: queued" in printed and "wrote " not in printed
    await console.session.finish()
    assert "1 job(s) stay queued" in console.printed() and "`cancel 2`" in console.printed()


async def test_forget_then_generate_again_reuses_no_id_and_overwrites_no_file(parts, tmp_path):
    settings, services, driver = parts
    out = tmp_path / "out"
    console = Console(services, out, background=True)
    printed = await console.run('imagine "a red apple" --count 2')
    driver.finish_generation(driver.claim(("generate",)))
    printed += await console.run("wait 1")
    assert {p.name for p in out.iterdir()} == {"gen1-1.png", "gen1-2.png", "gen1-grid.png"}
    printed += await console.run("forget --yes")
    assert "Deleted" in printed and "Removed 3 copies" in printed
    assert list(out.iterdir()) == []  # forget removes the console's own copies too
    (out / "gen2-1.png").write_bytes(b"a picture someone else made")  # e.g. from another data dir

    printed += await console.run('imagine "a red apple" --count 2')
    driver.finish_generation(driver.claim(("generate",)))
    printed += await console.run("wait 2")
    job_ids = queued_ids(printed)
    generation_ids = [int(n) for n in re.findall(r"\(generation (\d+):", printed)]
    assert len(job_ids) == 2 and len(set(job_ids)) == 2 and job_ids[1] > job_ids[0]
    assert len(generation_ids) == 2 and generation_ids[1] > generation_ids[0]
    assert (out / "gen2-1.png").read_bytes() == b"a picture someone else made"
    wrote = [Path(line.removeprefix("wrote ")) for line in printed.splitlines() if line.startswith("wrote ")]
    assert len(wrote) == len(set(wrote)) == 6
    assert out / "gen2-1-2.png" in wrote and all(p.stat().st_size > 0 for p in wrote[3:])  # the first 3: forgotten
    await console.session.finish()


async def test_cancel_says_when_a_waiting_job_had_already_run_steps(parts, tmp_path):
    settings, services, driver = parts
    await services.db.run(stored_subject)
    console = Console(services, tmp_path / "out", background=True)
    await console.run("train --subject rraj")
    train = driver.claim(("train",))
    driver.progress(train, 3, 4)
    assert jobs.release_job(driver.conn, train.id, "queue-driver", "paused")  # back in the queue, 3 steps done
    printed = await console.run("cancel 1")
    assert "had done 3 step(s)" in printed and "had not started" not in printed
    await console.session.finish()


async def test_retraining_from_stored_photos_needs_no_files(parts, tmp_path):
    settings, services, driver = parts
    photos = tmp_path / "photos"
    await services.db.run(stored_subject, 1)
    console = Console(services, tmp_path / "out", background=True)
    await console.run(f"demo-photos {photos}")
    printed = await console.run(f"photos add rraj {photos}/selfie.jpg")
    assert "Run `train --subject rraj` to train with the new photos." in printed
    assert "/train" not in printed and "/photos" not in printed
    printed = await console.run("train", "train --subject nobody", "train --subject rraj")
    assert "Training queued as job #1" in printed
    errors = [line for line in printed.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert "--subject TRIGGER" in errors[0] and "no subject `nobody`" in errors[1]
    assert "subjects lists yours" in errors[1] and "/subjects" not in errors[1]
    job = await services.db.run(jobs.get_job, 1)
    assert job.kind == "train" and len(job.payload["subject_ids"]) == 1
    await console.session.finish()


# The whole program: SIGINT mid-job, then a restart.
class Program:
    """`python -m bot console --worker none` with its output read line by line in a thread."""

    def __init__(self, tmp_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
        env.update({"LIKENESS_DATA_DIR": str(tmp_path / "data"), "LIKENESS_TRAIN_STEPS": "4",
                    "LIKENESS_GENERATION_COOLDOWN_S": "0", "PYTHONPATH": str(REPO)})
        self.process = subprocess.Popen([sys.executable, "-m", "bot", "console", "--worker", "none"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, cwd=tmp_path, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def send(self, *lines: str) -> None:
        self.process.stdin.write("".join(line + "\n" for line in lines))
        self.process.stdin.flush()

    def expect(self, pattern: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.process.poll() is None or not self.lines.empty(), "\n".join(self.seen)
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.seen))

    def end(self, timeout: float = 120) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        time.sleep(0.2)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code, "\n".join(self.seen)


def test_ctrl_c_mid_job_says_what_stays_queued_and_the_restart_resumes_and_writes_pictures(tmp_path):
    settings = make_settings(tmp_path, allowed_guild_ids=[])
    driver = QueueDriver(settings)
    stored_subject(driver.conn)
    first = Program(tmp_path)
    try:
        first.send("train --subject rraj", 'imagine "a red apple" --count 2')
        first.expect(r"Training queued as job #1")
        first.expect(r"Images queued as job #2")
        train = driver.claim(("train",))
        driver.progress(train, 2, 4, message="Training step 2/4")
        first.process.send_signal(signal.SIGINT)
        code, printed = first.end()
        assert code == 130, printed
        assert "Interrupted. 2 job(s) stay queued" in printed
        assert re.search(r"job #1: training rraj, running, 2/4 steps done", printed), printed
        assert "job #2: generating" in printed and "`cancel 1`" in printed and "Traceback" not in printed

        driver.finish_generation(driver.claim(("generate",)))  # finishes while no console runs
        assert not (tmp_path / "out").exists()

        second = Program(tmp_path)
        second.expect(r"Resuming job #1 \(training rraj, running, 2/4 steps done\)")
        second.expect(r"job #2 finished while the console was closed")
        second.expect(r"wrote out/gen1-grid.png")
        driver.finish_training(train)
        second.send("wait 1", "quit")
        second.expect(r"rraj is trained")
        code, printed = second.end()
        assert code == 0, printed
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gen1-1.png", "gen1-2.png", "gen1-grid.png"]
        assert "stay queued" not in printed and "Traceback" not in printed
    finally:
        for program in (first, locals().get("second")):
            if program is not None and program.process.poll() is None:
                program.process.kill()
        driver.close()
