"""bench.faults scenarios of a forget that must stay forgotten (issue 26), through the real commands.

- forget_killed_before_backups: a forget process is killed (SIGKILL) after it deleted the rows and files, before it
  cleaned the backups; a `damaged-*` folder from an earlier restore also holds the person. The next start must
  finish the erasure; `restore` then must not bring them back, and no marker of them may be left on disk.
- restore_after_forget: the host restores a backup taken before the forget (a copy kept outside the data folder,
  which no forget can reach). The restore must erase the person again by itself.
forgotten_users_restored: forgotten people found usable (user row or subject) after a scenario's recovery.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

from bench import fault_world as fw
from storage import generations
from storage.backups import backup_database
from storage.db import connect
from storage.files import FileStore
from storage.subjects import ensure_user

FORGOTTEN, KEPT = 7, 8
NAME, TRIGGER, CAPTION, PROMPT = "Zanzibarina Quoxley", "qqzxv", "caption-marker-7781", "prompt-marker-5521"
# A forget, killed where the issue found the hole: after the rows and files went, before the copies were cleaned.
KILLED_FORGET = f"""
import os, signal
from storage import erasure
from storage.db import connect
from storage.files import FileStore
from storage.forget import sweep_forgotten, tombstone_user
erasure.erase_from_copies = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # instrumentation: the kill
conn = connect("likeness.sqlite3")
tombstone_user(conn, {FORGOTTEN})
sweep_forgotten(conn, FileStore("store"))
"""


def _world(data: Path) -> list[bytes]:
    """The person to forget (with photos, a caption and a prompt), someone else, and a backup holding both."""
    data.mkdir(parents=True)
    conn = connect(data / "likeness.sqlite3")
    store = FileStore(data / "store")
    subject = fw.add_subject(conn, store, FORGOTTEN, TRIGGER, name=NAME, caption=CAPTION)
    generations.create_generation(conn, user_id=FORGOTTEN, kind="imagine", prompt=f"{TRIGGER} person {PROMPT}",
                                  negative_prompt="", seed=1, params={}, adapters=[], subject_ids=[subject.id])
    fw.add_subject(conn, store, KEPT, "kkept")
    for n in range(20):
        ensure_user(conn, 100 + n, f"someone else {n}")
    hashes = [row[0] for row in conn.execute("SELECT sha256 FROM photos WHERE subject_id = ?", (subject.id,))]
    backup_database(conn, data / "backups", keep=3)
    conn.close()
    return [m.encode() for m in (NAME, TRIGGER, CAPTION, PROMPT, *hashes)] + [bytes.fromhex(h) for h in hashes]


def _usable(db_path: Path) -> int:
    """1 when the forgotten person is back: their user row, or a subject with their trigger."""
    conn = connect(db_path, apply_migrations=False)
    try:
        users = conn.execute("SELECT count(*) FROM users WHERE id = ?", (FORGOTTEN,)).fetchone()[0]
        subjects = conn.execute("SELECT count(*) FROM subjects WHERE trigger = ?", (TRIGGER,)).fetchone()[0]
    finally:
        conn.close()
    return int(users + subjects > 0)


def forget_killed_before_backups(root: Path, shared: Path, tally: fw.Tally) -> None:
    data = root / "forget-killed" / "data"
    markers = _world(data)
    aside = data / "damaged-20000101T000000.000"  # what an earlier restore set aside, holding the person
    aside.mkdir()
    shutil.copyfile(next((data / "backups").iterdir()), aside / "likeness.sqlite3")
    killed = subprocess.run([sys.executable, "-c", KILLED_FORGET], cwd=data, env=fw.clean_env(data),
                            capture_output=True, text=True, timeout=fw.START_TIMEOUT_S)
    rows_gone = not _usable(data / "likeness.sqlite3")
    copies_held = bool(fw.markers_found(data / "backups", markers)) and bool(fw.markers_found(aside, markers))
    reached = killed.returncode == -signal.SIGKILL and rows_gone and copies_held
    start = fw.run_bot(data, "console", "--worker", "none")
    restore = fw.run_bot(data, "restore", stdin="")
    after = fw.run_bot(data, "console", "--worker", "none", stdin="subjects\n")
    for run in (start, restore, after):
        tally.count_run(run)
    found = fw.markers_found(data, markers)
    back = _usable(data / "likeness.sqlite3")
    tally.add("forgotten_users_restored", back)
    tally.add("forgotten_bytes_found", len(found))
    tally.details["forget_killed_before_backups"] = {
        "killed_at_the_backups": reached, "start": start.code, "restore": restore.out.strip().splitlines()[-1:],
        "usable_after_restore": bool(back), "markers_found": found}
    tally.check("forget_killed_before_backups", reached,
                f"the forget was not killed between rows and backups (exit {killed.returncode})")


def restore_after_forget(root: Path, shared: Path, tally: fw.Tally) -> None:
    data = root / "restore-after-forget" / "data"
    markers = _world(data)
    kept_elsewhere = root / "restore-after-forget" / "host-copy.sqlite3"  # the host's own copy of a backup
    shutil.copyfile(next((data / "backups").iterdir()), kept_elsewhere)
    console = fw.run_bot(data, "console", "--worker", "none", stdin=f"as {FORGOTTEN}\nforget --yes\n")
    forgotten = not _usable(data / "likeness.sqlite3")
    restore = fw.run_bot(data, "restore", str(kept_elsewhere), stdin="")
    after = fw.run_bot(data, "console", "--worker", "none", stdin=f"as {KEPT}\nimagine {TRIGGER} person\n")
    for run in (console, restore, after):
        tally.count_run(run)
    back = _usable(data / "likeness.sqlite3")
    found = fw.markers_found(data, markers)
    tally.add("forgotten_users_restored", back)
    tally.add("forgotten_bytes_found", len(found))
    tally.details["restore_after_forget"] = {
        "forget": console.out.strip().splitlines()[-1:], "restore": restore.out.strip().splitlines()[-1:],
        "usable_after_restore": bool(back), "imagine_after": after.out.strip().splitlines()[-1:],
        "markers_found": found}
    tally.check("restore_after_forget", forgotten and restore.code == 0,
                f"the forget or the restore never happened (restore exit {restore.code})")
