"""bench.serve, bench.train, bench.likeness and bench.bot_load judge their reports with bench.goals: a report that
meets every stated goal exits 0; the same report with one figure missed, or absent, exits 1 and names it.

The reports are built here in each bench's own shape (the long benches themselves do not run in tests).
"""

from __future__ import annotations

import json

import pytest

from bench import bot_load, likeness, serve, train
from bench.goals import figure_at, missed_goals


def serve_report() -> dict:
    switch = {"ours": {"2": 0.4, "8": 0.4, "32": 0.42, "128": 0.41},
              "diffusers_hotswap": {"2": 11.0, "8": 11.2, "32": 11.1, "128": 11.3},
              "diffusers_resident": {"2": 1.6, "8": 5.1, "32": 17.0, "128": 68.0}}
    cpu = {"vs_diffusers_hotswap": 0.93, "vs_diffusers_resident": 0.89, "vs_diffusers_reload": 0.7,
           "switch_ms": switch, "switch_growth": 1.05, "picture_diff_max": 0, "bytes_per_adapter": 92160,
           "rss_growth_mb": 0.5,
           "switch_speedup_vs_hotswap": {n: round(switch["diffusers_hotswap"][n] / switch["ours"][n], 1)
                                         for n in switch["ours"]}}
    return {"benchmark": "serve", "cpu": cpu}


def train_report(cuda: bool = False) -> dict:
    report = {"cpu": {"overhead_ratio": 1.0, "cache_speedup": 1.2}, "peak_rss_mb": 800.0}
    if cuda:
        report["cuda"] = {"families": {"sd15": {"peak_vram_gb": 4.1}, "sdxl": {"peak_vram_gb": 10.9},
                                       "flux": {"peak_vram_gb": 9.2}}}
    return report


def likeness_report() -> dict:
    return {"drift_ratio": 0.94, "drift_ratio_per_seed": [0.63, 0.97, 1.61], "fidelity_gain": {"with_prior": 1.0}}


def bot_load_phase() -> dict:
    return {"unacknowledged": 0, "ack_p99_ms": 6.9, "loop_lag_p99_ms": 9.8, "worker_busy_through_bursts": 1}


def bot_load_report() -> dict:
    return {**bot_load_phase(), "with_worker_nice_10": bot_load_phase(), "compare_nice": True}


def judged(module, report: dict, capsys) -> tuple[int, dict, str]:
    status = module.judge(report, as_json=True)
    captured = capsys.readouterr()
    return status, json.loads(captured.out), captured.err


# (bench module, a report meeting every goal, the figures its goals must cover)
BENCHES = {
    "serve": (serve, serve_report, ["vs_diffusers_hotswap", "vs_diffusers_resident", "vs_diffusers_reload",
                                    "switch_speedup_vs_hotswap.2", "switch_speedup_vs_hotswap.8",
                                    "switch_speedup_vs_hotswap.32", "switch_speedup_vs_hotswap.128",
                                    "switch_growth", "picture_diff_max"]),
    "train": (train, train_report, ["overhead_ratio"]),
    "train-cuda": (train, lambda: train_report(cuda=True),
                   ["overhead_ratio", "cuda.families.sd15.peak_vram_gb", "cuda.families.sdxl.peak_vram_gb",
                    "cuda.families.flux.peak_vram_gb"]),
    "likeness": (likeness, likeness_report, ["drift_ratio"]),
    "bot_load": (bot_load, bot_load_report,
                 [f"{prefix}{name}" for prefix in ("", "with_worker_nice_10.") for name in
                  ("unacknowledged", "ack_p99_ms", "loop_lag_p99_ms", "worker_busy_through_bursts")]),
}
CASES = [(bench, figure) for bench, (_, _, figures) in BENCHES.items() for figure in figures]


def _goal_on(module, report: dict, figure: str):
    goals = module.goals(report) if hasattr(module, "goals") else module.GOALS
    return next(goal for goal in goals if goal.figure == figure)


def _holder(report: dict, module, figure: str) -> tuple[dict, str]:
    """The dict that holds `figure` in the report as the bench builds it, and its key there: serve and train
    measure their headline figures in the CPU run, and `judge` copies them up."""
    holder = report["cpu"] if module is serve or figure == "overhead_ratio" else report
    *path, key = figure.split(".")
    for part in path:
        holder = holder[part]
    return holder, key


def _missing_value(goal) -> float:
    """A value on the wrong side of the goal."""
    step = max(abs(goal.target), 1.0)
    return goal.target + step if goal.op in ("<=", "<", "==") else goal.target - step


@pytest.mark.parametrize("bench", list(BENCHES))
def test_a_report_meeting_every_goal_exits_zero(bench, capsys):
    module, make, figures = BENCHES[bench]
    status, printed, err = judged(module, make(), capsys)
    assert status == 0, printed["goals_missed"]
    assert printed["goals_missed"] == [] and "goal missed" not in err
    assert sorted(goal.split()[0] for goal in printed["goals"]) == sorted(figures)


@pytest.mark.parametrize(("bench", "figure"), CASES)
def test_a_missed_figure_exits_one_and_is_named(bench, figure, capsys):
    module, make, _ = BENCHES[bench]
    report = make()
    goal = _goal_on(module, report, figure)
    holder, key = _holder(report, module, figure)
    holder[key] = _missing_value(goal)
    status, printed, err = judged(module, report, capsys)
    assert status == 1
    assert [miss["goal"] for miss in printed["goals_missed"]] == [str(goal)]
    assert printed["goals_missed"][0]["why"] == "missed"
    assert f"goal missed: {goal}" in err


@pytest.mark.parametrize(("bench", "figure"), CASES)
@pytest.mark.parametrize("absent", ["removed", "None"])
def test_an_absent_figure_exits_one_as_not_measured(bench, figure, absent, capsys):
    module, make, _ = BENCHES[bench]
    report = make()
    goal = _goal_on(module, report, figure)
    holder, key = _holder(report, module, figure)
    if absent == "removed":
        del holder[key]
    else:
        holder[key] = None
    status, printed, err = judged(module, report, capsys)
    assert status == 1
    assert printed["goals_missed"] == [{"goal": str(goal), "value": None, "why": "not measured"}]
    assert figure_at(printed, figure) is None
    assert f"goal missed: {goal} (measured: None, not measured)" in err


def test_serve_without_its_cpu_run_misses_every_goal(capsys):
    status, printed, _ = judged(serve, {"benchmark": "serve"}, capsys)
    assert status == 1
    assert len(printed["goals_missed"]) == len(serve.GOALS)
    assert {miss["why"] for miss in printed["goals_missed"]} == {"not measured"}


def test_bot_load_phase_that_never_ran_misses_its_goals(capsys):
    report = bot_load_report()
    report["with_worker_nice_10"] = {"not_run": "the worker never started training: timed out"}
    status, printed, _ = judged(bot_load, report, capsys)
    assert status == 1
    assert sorted(miss["goal"].split()[0] for miss in printed["goals_missed"]) == sorted(
        f"with_worker_nice_10.{goal.figure}" for goal in bot_load.PHASE_GOALS)


def test_bot_load_without_the_nice_comparison_states_only_the_first_phase(capsys):
    report = bot_load_phase() | {"compare_nice": False}
    status, printed, _ = judged(bot_load, report, capsys)
    assert status == 0
    assert len(printed["goals"]) == len(bot_load.PHASE_GOALS)


def test_bot_load_percentiles_over_nothing_and_a_lost_worker_are_misses():
    before = type("Job", (), {"step": 10, "state": "running"})()
    after = type("Job", (), {"step": 10, "state": "queued"})()
    worker = {"busy": False, "burst_s": 1.0, "cpu_s": None}
    figures = bot_load.phase_figures([], 0, {"samples": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0},
                                     before, after, worker)
    assert figures["ack_p99_ms"] is None and figures["loop_lag_p99_ms"] is None
    assert figures["worker_busy_through_bursts"] == 0
    missed = {miss["goal"].split()[0] for miss in missed_goals(figures, bot_load.goals({"compare_nice": False}))}
    assert missed == {"ack_p99_ms", "loop_lag_p99_ms", "worker_busy_through_bursts"}


def test_likeness_ratio_over_a_zero_baseline_is_not_measured():
    rows = [{"train_seed": 0, "prior_preservation": prior, "drift": drift, "drift_pixels": 0.0,
             "fidelity_gain": 1.0, "train_s": 1.0, "eval_s": 1.0} for prior, drift in ((False, 0.0), (True, 0.1))]
    summary = likeness._summary(rows, (0,), 10, {}, 1.0)
    assert summary["drift_ratio"] is None
    assert [miss["why"] for miss in missed_goals(summary, likeness.GOALS)] == ["not measured"]


def test_each_bench_main_exits_with_its_judgement(monkeypatch, tmp_path, capsys):
    """The command line's exit status is the judgement: 1 with a missed goal, 0 without (the long measuring parts
    replaced by reports built here)."""
    cpu = serve_report()["cpu"]

    async def bot_load_run(args):
        return bot_load_report() | {"ack_p99_ms": 3500.0}

    monkeypatch.setattr(serve, "run_family", lambda *args, **kwargs: dict(cpu, vs_diffusers_hotswap=0.99))
    monkeypatch.setattr(serve.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train, "cpu_benchmark", lambda *args: {"overhead_ratio": 1.2, "cache_speedup": 1.1})
    monkeypatch.setattr(likeness, "run_ablation", lambda *args: likeness_report() | {"drift_ratio": 1.02})
    monkeypatch.setattr(bot_load, "run", bot_load_run)
    assert serve.main(["--json", "--quick", "--models-dir", str(tmp_path / "models")]) == 1
    assert json.loads(capsys.readouterr().out)["goals_missed"][0]["goal"] == "vs_diffusers_hotswap <= 0.95"
    assert train.main(["--json", "--quick", "--cpu"]) == 1
    assert likeness.main(["--json", "--quick"]) == 1
    assert bot_load.main(["--json"]) == 1
    capsys.readouterr()
    monkeypatch.setattr(serve, "run_family", lambda *args, **kwargs: dict(cpu))
    assert serve.main(["--json", "--quick", "--models-dir", str(tmp_path / "models")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["goals_missed"] == [] and printed["vs_diffusers_hotswap"] == cpu["vs_diffusers_hotswap"]


def test_serve_request_ratios_come_from_cpu_time_on_the_cpu_and_wall_time_on_cuda():
    wall = {"ours": [1.0, 1.2, 1.1], "diffusers_hotswap": [2.0, 2.0, 2.0], "diffusers_resident": [1.1, 1.1, 1.1]}
    cpu = {"ours": [0.5, 0.5, 0.5], "diffusers_hotswap": [0.6, 0.6, 0.6], "diffusers_resident": [1.0, 1.0, 1.0]}
    on_cpu = serve.request_ratios(wall, cpu, judged_on="cpu")
    assert on_cpu["vs_diffusers_hotswap"] == round(0.5 / 0.6, 3) and on_cpu["vs_diffusers_resident"] == 0.5
    assert on_cpu["ratios_in_wall_time"]["vs_diffusers_hotswap"] == 0.55
    assert on_cpu["request_ms"]["ours"] == 1100.0 and on_cpu["request_cpu_ms"]["ours"] == 500.0
    on_cuda = serve.request_ratios(wall, cpu, judged_on="wall")
    assert on_cuda["vs_diffusers_hotswap"] == 0.55 and on_cuda["ratios_in_cpu_time"]["vs_diffusers_resident"] == 0.5
