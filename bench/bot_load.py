"""Load on the bot: 20 users each send 5 commands at once while the worker trains the tiny model.

    python -m bench.bot_load --json

The real bot (create_bot) runs against SimCord's in-memory Discord; the real worker runs as a supervised subprocess
(`python -m trainer`) and is training when the burst arrives, so both compete for the CPU as on a small host. All
interactions of a round are delivered back to back (nothing settles in between). It reports:
- `unacknowledged`: interactions never acknowledged (must be 0);
- `ack_p99_ms`: time from delivery to the bot's first response (defer or answer); Discord allows 3000 ms;
- `loop_lag_p99_ms`: how late the bot's event loop ran a probe (bot.loop_lag, every 5 ms here) during the bursts.
  Target < 50 ms.
- `worker_busy_through_bursts`: 1 when the same worker was still alive and on the training job after the bursts
  (0: the load was not what this bench claims). Reported with it: the worker's CPU seconds and the training steps
  recorded during the bursts (a worker renders the bursts' queued pictures between steps, so steps may not move
  in a short run).
The first phase runs the worker at nice 0; the same bursts are then repeated at the default `worker_nice` of 10,
side by side in the same run (`with_worker_nice_10`), to show what the bot gains when the worker yields the CPU.
Goals (bench/goals.py), for each phase: unacknowledged == 0, ack_p99_ms < 3000, loop_lag_p99_ms < 50,
worker_busy_through_bursts == 1. A figure a phase could not measure (no acknowledgement, no probe, a worker that
never trained) is a miss; the exit status is 1 when any goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
import simcord
from simcord import actors as sim_actors
from simcord import interactions as sim_interactions
from simcord.enums import AppCommandType, InteractionType
from simcord.http import router as sim_router

from bench.goals import Goal, finish
from bot.app import create_bot
from bench.sample_photos import two_face_jpegs
from bot.loop_lag import percentile
from bot.services import Services
from bot.supervisor import WorkerSupervisor
from storage import jobs
from storage.db import AsyncDatabase
from storage.files import FileStore
from storage.settings import Settings

GUILD_ID = 4_200_000_000_000_000_01
# Five commands per user: read-only views, a queued generation, and two refusals (error paths count too).
BURST = (
    ("status", {}),
    ("subjects", {}),
    ("imagine", {"prompt": "a watercolor fox in the snow", "count": 1}),
    ("admin limits", {}),
    ("cancel", {"job": 999_999}),
)
NICE_10 = "with_worker_nice_10"
PHASE_GOALS = (
    Goal("unacknowledged", "==", 0),
    Goal("ack_p99_ms", "<", 3000),
    Goal("loop_lag_p99_ms", "<", 50),
    Goal("worker_busy_through_bursts", "==", 1),
)


class AckClock:
    """Stamps the moment each interaction's first response reaches (simulated) Discord."""

    def __init__(self) -> None:
        self.acked: dict[int, float] = {}
        self._original = sim_router.dispatch

    def __enter__(self) -> AckClock:
        def timed(backend, method, path, **kwargs):
            if method == "POST" and path.startswith("/interactions/") and path.endswith("/callback"):
                self.acked.setdefault(int(path.split("/")[2]), time.perf_counter())
            return self._original(backend, method, path, **kwargs)

        sim_router.dispatch = timed
        return self

    def __exit__(self, *exc: object) -> None:
        sim_router.dispatch = self._original


def deliver(actor, channel, name: str, options: dict) -> int:
    """One slash command delivered to the bot without waiting for it (SimCord's `slash` minus the settle)."""
    parts = name.split()
    root = sim_actors._resolve_visible_command(actor, channel.id, parts[0], AppCommandType.CHAT_INPUT)
    leaf, nesting = sim_interactions.walk_to_subcommand(root, parts[1:])
    leaf_options, resolved = sim_interactions.build_options(actor, name, leaf, options, channel_id=channel.id)
    data = {"id": root["id"], "name": root["name"], "type": AppCommandType.CHAT_INPUT,
            "options": sim_interactions.nest_options(root, nesting, leaf_options)}
    if resolved:
        data["resolved"] = resolved
    record, payload = sim_interactions.base_payload(
        actor._env.backend, type=InteractionType.APPLICATION_COMMAND, channel_id=channel.id,
        guild_id=actor.guild.id, user_id=actor.id, data=data)
    actor._env.backend.emit("INTERACTION_CREATE", payload)
    return record.id


async def wait_for_training(db: AsyncDatabase, job_id: int, owner: str | None, timeout_s: float) -> jobs.Job:
    """Until this worker is running training steps on the job (its progress line carries a loss)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = await db.run(jobs.get_job, job_id)
        if job.state == "running" and job.owner == owner and "loss" in job.message:
            return job
        if job.finished or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start training in time (state {job.state}: {job.error})")
        await asyncio.sleep(0.5)


async def burst(env, channel, members, clock: AckClock) -> tuple[list[float], int]:
    """Every user's five commands, delivered back to back as a gateway would (one event per loop step)."""
    delivered: dict[int, float] = {}
    for member in members:
        for name, options in BURST:
            delivered[deliver(member, channel, name, options)] = time.perf_counter()
            await asyncio.sleep(0)
    await env.settle(timeout=120)
    acks = [(clock.acked[i] - t) * 1000 for i, t in delivered.items() if i in clock.acked]
    silent = sum(1 for i in delivered if not env.backend.interactions[i].responded)
    return acks, silent


async def cancel_generations(db: AsyncDatabase) -> None:
    """Drop the bursts' queued generations, so the next phase's worker goes straight back to training."""
    for job in await db.run(jobs.active_jobs):
        if job.kind == "generate":
            await db.run(jobs.request_cancel, job.id)


async def measure(env, bot, db, supervisor, channel, members, job_id: int, args) -> dict:
    """Start the worker, wait until it trains, send the bursts, stop the worker (the job goes back to the queue)."""
    supervisor.start()
    try:
        try:
            await asyncio.wait_for(supervisor.started.wait(), 60)
            before = await wait_for_training(db, job_id, supervisor.state.owner, args.warmup_timeout)
        except (RuntimeError, asyncio.TimeoutError) as error:  # nothing measured: every goal of the phase missed
            return {"not_run": f"the worker never started training: {error or 'timed out'}"}
        acks, silent = [], 0
        bot.loop_lag.interval_s = args.probe_ms / 1000
        bot.loop_lag.reset()
        cpu_before, started = _cpu_s(supervisor.state.pid), time.perf_counter()
        with AckClock() as clock:
            for _ in range(args.rounds):
                round_acks, round_silent = await burst(env, channel, members, clock)
                acks, silent = acks + round_acks, silent + round_silent
        lag = bot.loop_lag.summary()
        cpu_after, burst_s = _cpu_s(supervisor.state.pid), time.perf_counter() - started
        after = await db.run(jobs.get_job, job_id)
        busy = supervisor.running and after.state == "running" and after.owner == supervisor.state.owner
        worker = {"busy": busy, "burst_s": round(burst_s, 2),
                  "cpu_s": None if None in (cpu_before, cpu_after) else round(cpu_after - cpu_before, 2)}
    finally:
        await supervisor.stop()
        await cancel_generations(db)
    return phase_figures(acks, silent, lag, before, after, worker)


def _cpu_s(pid: int | None) -> float | None:
    """The worker process's CPU seconds so far (None once it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, ValueError, TypeError):
        return None
    return times.user + times.system


def phase_figures(acks: list[float], silent: int, lag: dict, before: jobs.Job, after: jobs.Job,
                  worker: dict) -> dict:
    """A phase's figures; a percentile over no samples is None (not measured), never 0."""
    def ack(pct: float) -> float | None:
        return round(percentile(acks, pct), 1) if acks else None

    probed = lag["samples"] > 0
    return {
        "unacknowledged": silent, "acknowledged": len(acks), "ack_p50_ms": ack(50), "ack_p99_ms": ack(99),
        "ack_max_ms": round(max(acks), 1) if acks else None,
        "loop_lag_p50_ms": lag["p50_ms"] if probed else None, "loop_lag_p99_ms": lag["p99_ms"] if probed else None,
        "loop_lag_max_ms": lag["max_ms"] if probed else None, "loop_lag_samples": lag["samples"],
        "worker_busy_through_bursts": int(worker["busy"]), "burst_s": worker["burst_s"],
        "worker_cpu_s_during_bursts": worker["cpu_s"],
        "worker_steps_during_bursts": (after.step or 0) - (before.step or 0),
        "worker_training": {"state": after.state, "step_before": before.step, "step_after": after.step},
    }


async def run(args: argparse.Namespace) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="likeness-bot-load-"))
    settings = Settings(_env_file=None, data_dir=data_dir, model_family="tiny-sd15", allowed_guild_ids=[GUILD_ID],
                        train_steps=args.train_steps, generation_cooldown_s=0, log_level="WARNING", worker_nice=0)
    async with await AsyncDatabase.open(settings.database_path) as db:
        services = Services.build(settings, db, FileStore(settings.store_dir))
        bot = create_bot(settings, services)
        async with simcord.run(bot, settle_timeout=60) as env:
            guild = env.create_guild("Load", id=GUILD_ID)
            channel = guild.create_text_channel("likeness")
            members = [guild.add_member(env.create_user(f"user{i}")) for i in range(args.users)]
            shown = await members[0].slash(channel, "train", trigger="rraj")
            await members[0].submit_modal(shown, {"likeness:photos": two_face_jpegs()})
            job_id = (await db.run(jobs.active_jobs, members[0].id))[0].id
            plain = WorkerSupervisor(settings, db, stop_timeout_s=60)
            result = await measure(env, bot, db, plain, channel, members, job_id, args)
            if args.compare_nice:
                niced = WorkerSupervisor(settings.model_copy(update={"worker_nice": 10}), db, stop_timeout_s=60)
                result[NICE_10] = await measure(env, bot, db, niced, channel, members, job_id, args)
            await db.run(jobs.request_cancel, job_id)
    result.update({
        "users": args.users, "commands_per_user": len(BURST), "rounds": args.rounds,
        "interactions": args.users * len(BURST) * args.rounds, "cpu_count": os.cpu_count(),
        "compare_nice": args.compare_nice,
    })
    return result


def goals(report: dict) -> list[Goal]:
    """Every phase's goals: nice 0 always, nice 10 unless the comparison was switched off."""
    stated = list(PHASE_GOALS)
    if report.get("compare_nice", True):
        stated += [Goal(f"{NICE_10}.{goal.figure}", goal.op, goal.target) for goal in PHASE_GOALS]
    return stated


def judge(report: dict, *, as_json: bool) -> int:
    return finish(report, goals(report), as_json=as_json)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bot_load", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20, help="bursts, one after another")
    parser.add_argument("--probe-ms", type=float, default=5, help="how often the loop-lag probe runs during bursts")
    parser.add_argument("--train-steps", type=int, default=100_000, help="long enough to outlast the bursts")
    parser.add_argument("--warmup-timeout", type=float, default=600, help="seconds to wait for training to start")
    parser.add_argument("--no-compare-nice", dest="compare_nice", action="store_false",
                        help="skip the second run with the worker at nice 10")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return judge(asyncio.run(run(args)), as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
