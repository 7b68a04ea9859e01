"""bench.goals: a goal is met only by a measured figure that satisfies it."""

from __future__ import annotations

import json

import pytest

from bench.goals import Goal, figure_at, finish, missed_goals


def test_a_met_goal_exits_zero_and_reports_nothing_missed(capsys):
    report = {"ratio": 0.9, "held_out": {"recall": 0.95}}
    status = finish(report, [Goal("ratio", "<=", 0.95), Goal("held_out.recall", ">=", 0.9)], as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert status == 0
    assert printed["goals_missed"] == []
    assert printed["goals"] == ["ratio <= 0.95", "held_out.recall >= 0.9"]


def test_a_missed_goal_exits_one_and_is_named_on_stderr(capsys):
    status = finish({"ratio": 1.2}, [Goal("ratio", "<=", 0.95)], as_json=True)
    captured = capsys.readouterr()
    assert status == 1
    assert json.loads(captured.out)["goals_missed"] == [{"goal": "ratio <= 0.95", "value": 1.2, "why": "missed"}]
    assert "goal missed: ratio <= 0.95 (measured: 1.2, missed)" in captured.err


@pytest.mark.parametrize("report", [{}, {"count": None}, {"count": float("nan")}, {"count": True}, {"count": "0"}])
def test_a_figure_that_was_not_measured_is_a_miss_never_a_pass(report):
    missed = missed_goals(report, [Goal("count", "==", 0)])
    assert [m["why"] for m in missed] == ["not measured"]


def test_dotted_paths_stop_at_missing_parts():
    assert figure_at({"a": {"b": 3}}, "a.b") == 3
    assert figure_at({"a": {"b": 3}}, "a.c") is None
    assert figure_at({"a": 5}, "a.b") is None


def test_an_unknown_comparison_is_refused():
    with pytest.raises(ValueError, match="unknown comparison"):
        Goal("x", "~", 1)
