"""bench.faults scenarios of restores and of a data directory claimed twice (issue 26), through the real commands.

- restore_empty_backup: the only backup is the empty one of the first start; the database is zeroed. The start is
  refused, and `restore` must refuse that backup too (before: "restored … (0 users)", exit 0). Then, with a good
  backup older than a newer empty one, `restore` must pick the good one and lose no confirmed row.
- restore_while_running: `restore` while a console runs with `--worker none`, and while a console whose worker was
  just killed runs: both refused; the share and the job the console confirmed are there after a restart.
- second_instance: a second console, a `--worker thread` console and a hand-started worker next to a running
  console are refused at once with one line naming it; a console started next to a hand-started worker waits for
  it instead of restarting its own worker again and again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import fault_world as fw
from storage import consent
from storage.backups import backup_database
from storage.db import connect
from storage.files import FileStore
from storage.locks import INSTANCE_LOCK, WORKER_LOCK, is_held


def _world(data: Path, queue_training: bool = True) -> None:
    """The console's user with a subject and stored photos, shared with user 2, whose training is queued."""
    data.mkdir(parents=True, exist_ok=True)
    conn = connect(data / "likeness.sqlite3")
    subject = fw.add_subject(conn, FileStore(data / "store"), 1, "rraj")
    other = fw.add_subject(conn, FileStore(data / "store"), 2, "ssam")
    consent.grant_access(conn, subject.id, user_id=2)
    if queue_training:
        fw.queue_training(conn, other.id, 2)
    conn.close()


def restore_empty_backup(root: Path, shared: Path, tally: fw.Tally) -> None:
    data = root / "restore-empty" / "data"
    data.mkdir(parents=True)
    conn = connect(data / "likeness.sqlite3")
    first_start = backup_database(conn, data / "backups", keep=5)  # taken before anyone used it
    conn.close()
    _world(data)
    conn = connect(data / "likeness.sqlite3")
    good = backup_database(conn, root / "restore-empty" / "kept-aside", keep=5)  # held back for phase two
    conn.close()
    confirmed = fw.confirmed_rows(data / "likeness.sqlite3")
    os.truncate(data / "likeness.sqlite3", 0)  # the attack: the database zeroed
    refused_start = fw.run_bot(data, "console", "--worker", "none")
    refused = fw.run_bot(data, "restore", stdin="")
    unsafe = refused.code == 0  # it restored the empty backup
    # Phase two: the good backup is back, and a newer empty one (an emptied database backed up) is the newest.
    shutil.copyfile(good, data / "backups" / f"likeness-{first_start.name[9:-8]}5.sqlite3")
    empty_conn = connect(root / "restore-empty" / "emptied" / "likeness.sqlite3")
    backup_database(empty_conn, data / "backups", keep=5)
    empty_conn.close()
    picked = fw.run_bot(data, "restore", stdin="") if not unsafe else refused
    healthy = fw.run_bot(data, "console", "--worker", "none")
    for run in (refused_start, refused, picked, healthy):
        tally.count_run(run)
    lost = len(confirmed - fw.confirmed_rows(data / "likeness.sqlite3")) if healthy.code == 0 else len(confirmed)
    tally.add("unsafe_restores", int(unsafe))
    tally.add("confirmed_writes_lost", lost)
    tally.details["restore_empty_backup"] = {
        "start": refused_start.out.strip().splitlines()[-1:], "restore_of_the_empty_backup": refused.out.strip(),
        "restore_with_a_good_older_backup": picked.out.strip().splitlines()[-1:], "confirmed_rows": len(confirmed),
        "lost": lost}
    tally.check("restore_empty_backup", refused_start.code == 1 and refused.code is not None,
                "the zeroed database was not refused at start")


def restore_while_running(root: Path, shared: Path, tally: fw.Tally) -> None:
    data = root / "restore-running" / "data"
    _world(data)
    conn = connect(data / "likeness.sqlite3")
    backup_database(conn, data / "backups", keep=5)
    conn.close()
    refusals, confirmed_ok = [], False
    console = fw.Console(data, "--worker", "none")
    try:
        running = fw.wait_for(lambda: is_held(data / INSTANCE_LOCK), fw.START_TIMEOUT_S)
        console.send("share rraj --user 3", "train --subject rraj")
        confirmed_ok = bool(running) and console.expect("Training queued as job")
        refusals.append(fw.run_bot(data, "restore", stdin=""))
    finally:
        console.close()
    killed_worker = fw.Console(data, "--worker", "subprocess")
    try:
        worker = fw.wait_for(lambda: is_held(data / WORKER_LOCK) and next(
            iter(fw.children_of(killed_worker.process.pid)), None), fw.START_TIMEOUT_S)
        if worker:
            os.kill(worker, signal.SIGKILL)
            fw.wait_for(lambda: not fw.alive(worker), 30)
            refusals.append(fw.run_bot(data, "restore", stdin=""))  # before its supervisor restarts it
    finally:
        killed_worker.close()
    after = fw.run_bot(data, "console", "--worker", "none", stdin="subjects\nstatus\n")
    for run in (*refusals, after):
        tally.count_run(run)
    conn = connect(data / "likeness.sqlite3", apply_migrations=False)
    try:
        shares = conn.execute("SELECT count(*) FROM grants WHERE user_id = 3").fetchone()[0]
        queued = conn.execute("SELECT count(*) FROM jobs WHERE user_id = 1 AND kind = 'train'").fetchone()[0]
    finally:
        conn.close()
    went_through = sum(run.code == 0 for run in refusals)
    tally.add("unsafe_restores", went_through)
    tally.add("confirmed_writes_lost", int(confirmed_ok and shares == 0) + int(confirmed_ok and queued == 0))
    tally.details["restore_while_running"] = {
        "refusals": [run.out.strip().splitlines()[-1:] for run in refusals], "restores_that_went_through":
        went_through, "share_kept": shares == 1, "job_kept": queued >= 1}
    tally.check("restore_while_running", confirmed_ok and len(refusals) == 2,
                "the console never confirmed its writes, or its worker never started")


def _start(args: list[str], data: Path, stdin: str = "whoami\n", timeout_s: float = 60) -> fw.Run:
    began = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", *args], input=stdin, cwd=data.parent,
                              env=fw.clean_env(data), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as expired:
        return fw.Run(None, f"{expired.stdout or ''}{expired.stderr or ''}", time.monotonic() - began)
    return fw.Run(done.returncode, done.stdout + done.stderr, time.monotonic() - began)


def second_instance(root: Path, shared: Path, tally: fw.Tally) -> None:
    data = root / "second-instance" / "data"
    _world(data, queue_training=False)
    first = fw.Console(data, "--worker", "subprocess")
    try:
        worker = fw.wait_for(lambda: is_held(data / WORKER_LOCK) and next(
            iter(fw.children_of(first.process.pid)), None), fw.START_TIMEOUT_S)
        seconds = {"console": _start(["bot", "console"], data),
                   "console_worker_thread": _start(["bot", "console", "--worker", "thread"], data),
                   "worker_by_hand": _start(["trainer"], data, stdin="")} if worker else {}
    finally:
        first.close()
    waited = _console_next_to_a_hand_started_worker(root / "second-instance-2" / "data", tally)
    for run in seconds.values():
        tally.count_run(run)
    started = [what for what, run in seconds.items() if run.code in (0, None)]
    named = [what for what, run in seconds.items() if f"pid {first.process.pid}" in run.out or "another worker" in run.out]
    tally.add("second_instances_started", len(started) + waited["restarts"] + int(
        waited["hand_worker_started"] and not (waited["waited"] and waited.get("took_over_after"))))
    tally.details["second_instance"] = {
        "refusals": {what: run.out.strip().splitlines()[-1:] for what, run in seconds.items()},
        "seconds_to_refuse": {what: round(run.seconds, 2) for what, run in seconds.items()},
        "refusal_names_the_holder": named, **waited}
    tally.check("second_instance", worker and waited["hand_worker_started"],
                "the first console's worker, or the one started by hand, never started")


def _console_next_to_a_hand_started_worker(data: Path, tally: fw.Tally) -> dict:
    """A worker started by hand holds the data directory; a console then starts: its own worker must wait (one
    warning), not be restarted again and again, and start once the hand-started one stops."""
    _world(data, queue_training=False)
    by_hand = subprocess.Popen([sys.executable, "-m", "trainer"], cwd=data.parent, env=fw.clean_env(data),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    console = None
    try:
        if not fw.wait_for(lambda: is_held(data / WORKER_LOCK), fw.START_TIMEOUT_S):
            return {"hand_worker_started": False, "waited": False, "restarts": 0}
        console = fw.Console(data, "--worker", "subprocess")
        time.sleep(8)  # several supervisor rounds
        log = (data / "likeness.log").read_text(errors="replace") if (data / "likeness.log").exists() else ""
        restarts = log.count("worker exited with")
        waited = "starts when it stops" in log
        by_hand.send_signal(signal.SIGTERM)
        by_hand.wait(timeout=120)
        took_over = fw.wait_for(lambda: next(iter(fw.children_of(console.process.pid)), None) and is_held(
            data / WORKER_LOCK), fw.START_TIMEOUT_S)
        return {"hand_worker_started": True, "waited": waited, "restarts": restarts,
                "took_over_after": bool(took_over)}
    finally:
        if console is not None:
            tally.count_run(fw.Run(console.close(), console.out, 0))
        if by_hand.poll() is None:
            by_hand.kill()
