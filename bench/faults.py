"""Faults that used to lose work or hang (issues 18 and 26), each provoked for real on the tiny model.

    python -m bench.faults --json [--quick] [--only SCENARIO ...]

Scenarios (here, bench/fault_restores.py, bench/fault_forgets.py, bench/fault_disks.py, bench/fault_stalls.py):
- damaged databases (0 bytes next to a full store, truncated, garbage header, garbage pages, garbage in the WAL):
  `python -m bot` must refuse with one line and a non-zero exit, never hang or show a traceback; then
  `python -m bot restore` and a clean start. recovery_s: from the damaged start to the first healthy one.
- kill -9 of the console while its worker runs: the worker must follow. recovery_s: kill to worker gone.
- kill -9 of the worker mid-training under the supervisor: the job goes straight back to the queue and a new
  worker resumes it. recovery_s: kill to the job running again under the new worker.
- a full disk (a tmpfs mounted here): a training job that cannot fit is refused before it starts, and a disk that
  fills mid-training fails the job with the disk-full sentence, never leaving it running.
- forget: markers of a forgotten user searched in the raw database, WAL, store and backups while the process runs.
- unshare mid-render: render steps drawn after the owner unshared (the render must stop before the next step).
- restore_empty_backup, restore_while_running, second_instance, forget_killed_before_backups,
  restore_after_forget, full_disk_at_start, export_full_disk, hung_worker (issue 26).

A scenario whose fault never happened (training never reached the step, the worker never started, the disk never
filled, the render failed before the unshare, a mount was refused) is listed in `not_exercised` and counted in
`scenarios_not_exercised`, never scored as 0 problems. Goals (bench/goals.py): every problem count 0,
`scenarios_not_exercised` 0, `hung_worker_detected_s` within two leases; the exit status is 1 when one is missed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import fault_disks, fault_forgets, fault_restores, fault_stalls
from bench import fault_world as fw
from bench.goals import Goal, finish
from storage import consent, generations, jobs
from storage.db import connect
from storage.files import FileStore
from storage.forget import sweep_forgotten, tombstone_user
from storage.locks import is_held
from storage.subjects import ensure_user

DAMAGE_KINDS = ("zero_byte", "truncated", "garbage_header", "garbage_pages", "garbage_wal")


def damaged_databases(root: Path, shared: Path, tally: fw.Tally) -> None:
    for kind in DAMAGE_KINDS:
        name = f"damaged_db_{kind}"
        data = root / kind / "data"
        data.mkdir(parents=True)
        fw.make_damaged(data, kind)
        began = time.monotonic()
        refused = fw.run_bot(data, "console", "--worker", "none")
        restored = fw.run_bot(data, "restore", stdin="")
        healthy = fw.run_bot(data, "console", "--worker", "none")
        for run in (refused, restored, healthy):
            tally.count_run(run)
        detected = refused.code not in (0, None)
        tally.figures["undetected_damage"] += int(not detected)
        ok = restored.code == 0 and healthy.code == 0
        tally.recovery_s[name] = round(time.monotonic() - began, 2) if ok else None
        lines = refused.out.strip().splitlines()
        tally.details[name] = {"refusal": lines[-1:], "lines_printed": len(lines), "restored": ok,
                               "restore": restored.out.strip().splitlines()[-1:]}
        tally.check(name, refused.code is not None, "the damaged start never finished")


def console_killed(root: Path, shared: Path, tally: fw.Tally) -> None:
    data = root / "kill-console" / "data"
    data.mkdir(parents=True)
    parent = subprocess.Popen([sys.executable, "-m", "bot", "console", "--worker", "subprocess"],
                              cwd=data.parent, env=fw.clean_env(data), stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = fw.wait_for(lambda: next(iter(fw.children_of(parent.pid)), None), fw.START_TIMEOUT_S)
    started = worker is not None and fw.wait_for(lambda: is_held(data / "worker.lock"), fw.START_TIMEOUT_S)
    killed_at = time.monotonic()
    parent.kill()
    parent.wait()
    gone = bool(started) and fw.wait_for(lambda: not fw.alive(worker), 60) is not None
    tally.recovery_s["console_kill9"] = round(time.monotonic() - killed_at, 2) if gone else None
    if worker is not None and fw.alive(worker):
        tally.figures["orphan_workers"] += 1
        os.kill(worker, signal.SIGKILL)
    tally.details["console_kill9"] = {"worker_started": bool(started), "worker_gone": gone}
    tally.check("console_kill9", started, "the worker never started")


MARKERS = ("Zanzibarina Quoxley", "qqzxv", "caption-marker-7781", "prompt-marker-5521")


def forget_erasure(root: Path, shared: Path, tally: fw.Tally) -> None:
    from storage.backups import backup_database

    data = root / "forget" / "data"
    data.mkdir(parents=True)
    conn = connect(data / "likeness.sqlite3")
    other = connect(data / "likeness.sqlite3")  # another process's connection, left open
    store = FileStore(data / "store")
    subject = fw.add_subject(conn, store, 7, "qqzxv", name="Zanzibarina Quoxley", caption="caption-marker-7781")
    generations.create_generation(conn, user_id=7, kind="imagine", prompt="qqzxv person prompt-marker-5521",
                                  negative_prompt="", seed=1, params={}, adapters=[], subject_ids=[subject.id])
    hashes = [row[0] for row in conn.execute("SELECT sha256 FROM photos")]
    backup_database(conn, data / "backups", keep=3)
    for n in range(20):
        ensure_user(conn, 100 + n, f"someone else {n}")
    markers = [m.encode() for m in (*MARKERS, *hashes)] + [bytes.fromhex(h) for h in hashes]
    before = fw.markers_found(data, markers)
    tombstone_user(conn, 7)
    sweep_forgotten(conn, store)
    found = fw.markers_found(data, markers)
    tally.figures["forgotten_bytes_found"] += len(found)
    tally.details["forget"] = {"markers": len(markers), "found_before": len(before), "found": found}
    tally.check("forget", before, "the markers were never on disk before the forget")
    other.close()
    conn.close()


def unshare_mid_render(root: Path, shared: Path, tally: fw.Tally) -> None:
    from trainer.__main__ import build_worker
    from trainer.serving import kinds

    settings = fw.settings_for(root / "unshare" / "data", shared, worker_lease_s=30.0)
    conn = connect(settings.database_path)
    store = FileStore(settings.store_dir)
    subject = fw.add_subject(conn, store, 1, "rraj")
    train = fw.queue_training(conn, subject.id, 1, steps=4)
    worker = build_worker(settings, owner="bench")
    worker.run(until_idle=True)
    adapter_id = (jobs.get_job(conn, train).result or {}).get("adapter_id")
    ensure_user(conn, 2, "friend")
    consent.grant_access(conn, subject.id, user_id=2)
    entries = [{"kind": "subject", "subject_id": subject.id, "adapter_id": adapter_id, "trigger": "rraj",
                "weight": 1.0}]
    params = {"width": 64, "height": 64, "steps": 8, "guidance": 5.0, "scheduler": "euler", "count": 3,
              "aspect": "square"}
    gen = generations.create_generation(conn, user_id=2, kind="imagine", prompt="rraj person", negative_prompt="",
                                        seed=1, params=params, adapters=entries, subject_ids=[subject.id])
    job_id = jobs.enqueue_job(conn, "generate", {"generation_id": gen}, user_id=2)
    steps: list[int] = []
    original = kinds.RenderProgress.on_step

    def on_step(self, pipe, step):  # instrumentation only: count the steps, unshare at the first
        steps.append(step)
        if len(steps) == 1:
            consent.revoke_access(conn, subject.id, user_id=2)
        original(self, pipe, step)

    kinds.RenderProgress.on_step = on_step
    try:
        worker.run(until_idle=True)
    finally:
        kinds.RenderProgress.on_step = original
        worker.close()
    job = jobs.get_job(conn, job_id)
    tally.figures["render_steps_after_unshare"] += max(0, len(steps) - 1)
    tally.details["unshare_mid_render"] = {"state": job.state, "error": job.error, "steps_drawn": len(steps),
                                           "steps_requested": 8 * 3}
    tally.check("unshare_mid_render", steps, f"the render failed before the unshare ({job.state}: {job.error})")
    conn.close()


# (scenario names, function, runs with --quick)
SCENARIOS = [
    (tuple(f"damaged_db_{kind}" for kind in DAMAGE_KINDS), damaged_databases, True),
    (("console_kill9",), console_killed, True),
    (("forget",), forget_erasure, True),
    (("disk_refused_early", "disk_full_mid_training"), fault_disks.disk_full_training, True),
    (("unshare_mid_render",), unshare_mid_render, True),
    (("restore_empty_backup",), fault_restores.restore_empty_backup, True),
    (("restore_while_running",), fault_restores.restore_while_running, True),
    (("second_instance",), fault_restores.second_instance, True),
    (("forget_killed_before_backups",), fault_forgets.forget_killed_before_backups, True),
    (("restore_after_forget",), fault_forgets.restore_after_forget, True),
    (("full_disk_at_start",), fault_disks.full_disk_at_start, True),
    (("export_full_disk",), fault_disks.export_full_disk, True),
    (("worker_kill9",), fault_stalls.worker_killed, False),
    (("hung_worker",), fault_stalls.hung_worker, False),
]
ALL_SCENARIOS = [name for names, _, _ in SCENARIOS for name in names]


def selected(quick: bool, only: list[str] | None) -> list[tuple]:
    if only:
        return [entry for entry in SCENARIOS if set(entry[0]) & set(only)]
    return [entry for entry in SCENARIOS if entry[2] or not quick]


def run_all(quick: bool, only: list[str] | None = None) -> dict:
    tally = fw.Tally()
    chosen = selected(quick, only)
    with tempfile.TemporaryDirectory(prefix="likeness-faults-") as tmp:
        root, shared = Path(tmp), Path(tmp) / "shared"
        for names, scenario, _ in chosen:
            try:
                scenario(root, shared, tally)
            except Exception as exc:  # a scenario that crashed did not run: it must not read as 0 problems
                logging.exception("scenario %s crashed", names[0])
                for name in names:
                    if name not in tally.exercised:
                        tally.missed(name, f"it crashed: {type(exc).__name__}: {str(exc)[:200]}")
            for name in names:
                if name not in tally.exercised and name not in tally.not_exercised:
                    tally.missed(name, "it never reported")
    return {**tally.figures, "scenarios_not_exercised": len(tally.not_exercised),
            "not_exercised": tally.not_exercised, "scenarios_exercised": tally.exercised,
            "recovery_s": tally.recovery_s, "details": tally.details}


def goals_for(report: dict) -> list[Goal]:
    goals = [Goal(name, "==", 0) for name in fw.ZERO_FIGURES]
    goals.append(Goal("scenarios_not_exercised", "==", 0))
    if "hung_worker" in report["scenarios_exercised"] or "hung_worker" in report["not_exercised"]:
        goals.append(Goal("hung_worker_detected_s", "<=", 2 * fault_stalls.HUNG_LEASE_S))
    return goals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true",
                        help="leave out the scenarios that train under a supervised worker (kill -9, hung worker)")
    parser.add_argument("--only", nargs="+", choices=ALL_SCENARIOS, metavar="SCENARIO",
                        help=f"run only these scenarios: {', '.join(ALL_SCENARIOS)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    report = run_all(args.quick, args.only)
    return finish(report, goals_for(report), as_json=args.json, indent=2)


if __name__ == "__main__":
    sys.exit(main())
