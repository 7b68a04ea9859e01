"""bench.faults: a scenario that did not run is a failure, never a pass."""

from __future__ import annotations

import json

from bench import fault_world, faults


def _run(capsys, *args: str) -> tuple[int, dict, str]:
    status = faults.main(["--json", *args])
    captured = capsys.readouterr()
    return status, json.loads(captured.out), captured.err


def test_a_refused_mount_leaves_the_scenario_not_exercised_and_the_bench_fails(capsys, monkeypatch):
    monkeypatch.setattr(fault_world, "mount_small_disk", lambda point, size: "mount: permission denied (test)")
    status, report, err = _run(capsys, "--only", "disk_refused_early", "full_disk_at_start")
    assert status == 1
    assert report["scenarios_not_exercised"] == 3  # both disk scenarios of that run, and full_disk_at_start
    assert set(report["not_exercised"]) == {"disk_refused_early", "disk_full_mid_training", "full_disk_at_start"}
    assert "permission denied (test)" in report["not_exercised"]["full_disk_at_start"]
    assert report["stuck_jobs"] == 0  # the problem counts stay 0, yet the bench does not pass
    assert "goal missed: scenarios_not_exercised == 0 (measured: 3, missed)" in err


def test_a_scenario_that_crashes_is_not_exercised(capsys, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("the scenario broke before its fault")

    monkeypatch.setattr(faults, "SCENARIOS", [(("forget",), crash, True)])
    status, report, _ = _run(capsys, "--only", "forget")
    assert status == 1
    assert report["not_exercised"] == {"forget": "it crashed: RuntimeError: the scenario broke before its fault"}


def test_a_scenario_that_ran_is_exercised_and_the_bench_passes(capsys):
    status, report, _ = _run(capsys, "--only", "forget")
    assert report["scenarios_exercised"] == ["forget"] and report["forgotten_bytes_found"] == 0
    assert status == 0 and report["goals_missed"] == []


def test_the_hung_worker_goal_is_judged_only_when_that_scenario_was_scheduled():
    ran = {"scenarios_exercised": ["hung_worker"], "not_exercised": {}}
    skipped = {"scenarios_exercised": ["forget"], "not_exercised": {}}
    assert "hung_worker_detected_s <= 12.0" in [str(goal) for goal in faults.goals_for(ran)]
    assert "hung_worker_detected_s <= 12.0" not in [str(goal) for goal in faults.goals_for(skipped)]
