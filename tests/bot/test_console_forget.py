"""`forget` in the console while its training job runs: rows and files go as soon as the job stops, while the
console is still running (it used to wait for the next start)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from storage import jobs
from storage.db import connect
from storage.files import FileStore, user_root
from tests.bot.services.conftest import add_fake_photos, add_subject

REPO = Path(__file__).resolve().parents[2]
CONSOLE_USER = 1


def _poll(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_forget_during_training_finishes_when_the_job_stops_while_the_console_runs(tmp_path):
    data = tmp_path / "data"
    conn = connect(data / "likeness.sqlite3")
    store = FileStore(data / "store")
    subject = add_subject(conn, CONSOLE_USER, "rraj")
    add_fake_photos(conn, subject, 2)
    store.write_bytes(f"{user_root(CONSOLE_USER)}/subjects/{subject.id}/crops/{'ab' * 32}.png", b"a crop")
    job_id = jobs.enqueue_job(conn, "train", {"subject_ids": [subject.id]}, user_id=CONSOLE_USER)
    assert jobs.claim_next_job(conn, "other-worker", 600).id == job_id  # training is running

    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(LIKENESS_DATA_DIR=str(data), LIKENESS_BACKUP_INTERVAL_H="0")
    console = subprocess.Popen([sys.executable, "-m", "bot", "console", "--worker", "none"], cwd=tmp_path,
                               env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        console.stdin.write("forget --yes\n")
        console.stdin.flush()
        _poll(lambda: jobs.get_job(conn, job_id).cancel_requested, 120, "the forget to reach the job")
        assert conn.execute("SELECT count(*) FROM photos").fetchone()[0] == 2  # kept while the job runs
        assert jobs.finish_job(conn, job_id, "other-worker", "cancelled")  # the worker honours the cancel

        def erased() -> bool:
            return conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0
        _poll(erased, 60, "the console to finish the forget")
        assert console.poll() is None  # the console is still running
        assert conn.execute("SELECT count(*) FROM photos").fetchone()[0] == 0
        assert store.list_files(user_root(CONSOLE_USER)) == []
    finally:
        out, err = console.communicate(timeout=60)  # end of input ends the console
    assert "Traceback" not in out + err
