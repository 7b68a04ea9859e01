"""The console front end: scripted sessions through the real console code, and `python -m bot` itself."""

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bot.__main__ import NO_TOKEN_LINE, ThreadWorker
from bot.console import ConsoleSession
from bot.services import Services
from storage.db import AsyncDatabase
from storage.files import FileStore, user_root
from tests.bot.conftest import make_settings, share_models
from tests.bot.queue_driver import QueueDriver

REPO = Path(__file__).resolve().parents[2]


class Console:
    """A ConsoleSession over a fresh data dir; `run(lines)` returns what it printed."""

    def __init__(self, services: Services, out_dir: Path, waits: bool) -> None:
        self.stdout = io.StringIO()
        self.session = ConsoleSession(services, out_dir=out_dir, stdout=self.stdout, waits=waits, poll_s=0.1,
                                      job_timeout_s=600)

    async def run(self, *lines: str) -> str:
        start = self.stdout.tell()
        await self.session.run(lines)
        return self.stdout.getvalue()[start:]


@pytest.fixture
async def console_parts(tmp_path):
    settings = make_settings(tmp_path, allowed_guild_ids=[])
    db = await AsyncDatabase.open(settings.database_path)
    services = Services.build(settings, db, FileStore(settings.store_dir))
    yield settings, services
    await db.close()


async def test_malformed_lines_get_one_line_errors_and_the_session_goes_on(console_parts, tmp_path):
    _, services = console_parts
    console = Console(services, tmp_path / "out", waits=False)
    printed = await console.run('imagine "unclosed', "frobnicate", "share rraj", "as zero", "photos",
                                "train missing.jpg", "# just a comment", "", "whoami")
    lines = printed.splitlines()
    assert len(lines) == 7
    assert all(line.startswith("error: ") for line in lines[:6])
    assert "no closing quotation" in lines[0] and "unknown command `frobnicate`" in lines[1]
    assert "give --user ID" in lines[2] and "cannot read the photo missing.jpg" in lines[5]
    assert lines[6] == "user 1 (you)"


async def test_help_lists_every_verb(console_parts, tmp_path):
    _, services = console_parts
    printed = await Console(services, tmp_path / "out", waits=False).run("help", "help photos")
    for verb in ("train", "imagine", "share", "export", "forget", "wait", "as", "demo-photos", "photos add"):
        assert verb in printed


async def test_scripted_session_train_share_export_forget(console_parts, tmp_path):
    """Train on two photos, share, export, forget. The worker's side is played through the jobs table."""
    settings, services = console_parts
    photos, out = tmp_path / "photos", tmp_path / "out"
    console = Console(services, out, waits=False)
    printed = await console.run(f"demo-photos {photos}",
                                f"train --trigger rraj --class person {photos}/astronaut-[12].jpg")
    assert f"wrote {photos / 'astronaut-1.jpg'}" in printed
    assert "photo 1 (astronaut-1.jpg): accepted" in printed and "Training queued as job #1" in printed
    driver = QueueDriver(settings)
    try:
        driver.finish_training(driver.claim(("train",)))
    finally:
        driver.close()
    printed = await console.run("subjects", "share rraj --user 2", "as 2", "subjects", "export rraj", "as 1",
                                "export rraj")
    assert "rraj person (you): ready" in printed
    assert "user 2 can now use rraj." in printed
    assert "Shared with you\n\u2022 rraj person" in printed
    export_line = next(line for line in printed.splitlines() if "written to" in line)
    zip_path = Path(export_line.split("written to ")[1].rstrip("."))
    assert zip_path.parent == out and "pytorch_lora_weights.safetensors" in zipfile.ZipFile(zip_path).namelist()
    printed = await console.run("forget", "forget --yes", "subjects", "quit", "status")
    assert "run `forget --yes` to confirm" in printed
    assert not zip_path.exists() and "Removed 1 copy" in printed  # the export zip held the adapter
    assert "Deleted 1 subject(s), 2 photo(s), 1 adapter(s)" in printed
    assert printed.rstrip().endswith("(none)")  # `status` after `quit` never ran
    assert services.store.list_files(user_root(1)) == []


@pytest.mark.slow
@pytest.mark.end_to_end
async def test_scripted_session_with_the_real_worker(console_parts, tmp_path, shared_model_dirs):
    """The README's session: train on two photos, imagine with the trigger, share, export, forget."""
    settings, services = console_parts
    share_models(settings, shared_model_dirs)
    photos, out = tmp_path / "photos", tmp_path / "out"
    worker = ThreadWorker(settings)
    worker.start()
    try:
        console = Console(services, out, waits=True)
        printed = await console.run(
            f"demo-photos {photos}",
            f"train --trigger rraj --class person {photos}/astronaut-1.jpg {photos}/astronaut-2.jpg",
            'imagine "a photo of rraj person as a Van Gogh painting" --seed 7 --count 1',
            "share rraj --user 2", "as 2", 'imagine "a photo of rraj person" --count 1', "as 3",
            'imagine "a photo of rraj person"', "as 1", "export rraj")
        images = sorted(out.glob("gen*-1.png"))
        assert len(images) == 2 and all(p.stat().st_size > 0 for p in images)
        assert (out / "likeness-rraj-v1.zip").exists()
        forgotten = await console.run("forget --yes")
    finally:
        await worker.stop()
    assert "rraj is trained" in printed
    errors = [line for line in printed.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rraj" in errors[0]  # user 3 has no grant
    assert printed.index("now acting as user 3") < printed.index(errors[0])
    assert "Deleted 1 subject(s)" in forgotten
    # forget also removes the console's own copies of the owner's pictures and export
    assert not (out / "likeness-rraj-v1.zip").exists()
    assert "2 generation(s)" in forgotten and "Removed 3 copies the console wrote" in forgotten
    assert sorted(out.iterdir()) == []


def run_cli(args: list[str], stdin: str, tmp_path: Path, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update({"LIKENESS_DATA_DIR": str(tmp_path / "data"), **env_extra})
    return subprocess.run([sys.executable, "-m", "bot", *args], input=stdin, capture_output=True, text=True,
                          cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, timeout=300)


def test_python_m_bot_without_a_token_starts_the_console_and_says_so_first(tmp_path):
    done = run_cli([], "help\nnot-a-command\nsubjects\nquit\n", tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == NO_TOKEN_LINE
    assert "error: unknown command `not-a-command`" in done.stdout
    assert "Your subjects" in done.stdout and "Traceback" not in done.stderr


def test_python_m_bot_console_with_a_script_and_no_worker(tmp_path):
    script = tmp_path / "session.txt"
    script.write_text(f"demo-photos {tmp_path / 'photos'}\n"
                      f"train --trigger rraj {tmp_path / 'photos' / 'astronaut-*.jpg'}\nstatus\n"
                      "admin queue\nimgine a cat\n")
    done = run_cli(["console", "--worker", "none", "--script", str(script)], "", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Training queued as job #1" in done.stdout and "no worker runs in this console" in done.stdout
    assert "4 of 4 photo(s) accepted" in done.stdout  # the wildcard named the four demo photos of one person
    assert "#1 Training rraj: queued" in done.stdout
    assert "#1 Training rraj: queued (next in line) \u2014 user 1" in done.stdout  # the operator is an admin
    assert "error: unknown command `imgine`; did you mean `imagine`?" in done.stdout


def test_console_options_work_without_the_console_word(tmp_path):
    """`./run-bot --out cards` failed with "invalid choice"; the README shows that form."""
    script = tmp_path / "s.txt"
    script.write_text("whoami\n")
    done = run_cli(["--out", "cards", "--worker", "none", "--script", str(script)], "", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == NO_TOKEN_LINE and "user 1 (you)" in done.stdout
    assert "invalid choice" not in done.stderr


def test_a_bad_setting_stops_start_up_with_one_line(tmp_path):
    done = run_cli(["console"], "", tmp_path, LIKENESS_MAX_UPLOAD_BYTES="lots")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "LIKENESS_MAX_UPLOAD_BYTES" in done.stderr


def test_demo_photos_command(tmp_path):
    done = run_cli(["demo-photos", str(tmp_path / "p")], "", tmp_path)
    assert done.returncode == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "astronaut-1.jpg", "astronaut-2.jpg", "astronaut-3.jpg", "astronaut-4.jpg", "selfie.jpg"]
    assert all(p.stat().st_size > 10_000 for p in (tmp_path / "p").iterdir())


def test_sigterm_stops_the_console_and_then_its_worker(tmp_path):
    import signal
    import time

    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update({"LIKENESS_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)})
    console = subprocess.Popen([sys.executable, "-m", "bot", "console"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 120
        workers = []
        while not workers and time.monotonic() < deadline:
            workers = [p for p in psutil.Process(console.pid).children() if "trainer" in " ".join(p.cmdline())]
            time.sleep(0.2)
        assert workers, "the console did not start its worker"
        console.send_signal(signal.SIGTERM)  # stdin stays open: the session is waiting for a line
        assert console.wait(timeout=180) == 0
        assert not workers[0].is_running() or workers[0].status() == psutil.STATUS_ZOMBIE
    finally:
        if console.poll() is None:
            console.kill()
        console.communicate()
