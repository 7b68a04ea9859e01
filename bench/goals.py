"""Goals a benchmark states, judged in one place.

Every bench builds its report, then ends with `finish(report, GOALS, as_json=...)`:
- a goal is met only when its figure was measured: a figure that is missing or None (a scenario that did not run,
  a part that crashed) counts as missed, never as a pass;
- the report gains `goals` (each goal as text) and `goals_missed` (the ones not met, with the measured value);
- each missed goal is named on stderr, and the exit status is 1 when any was missed.
"""

from __future__ import annotations

import json
import math
import operator
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Goal:
    """`figure` (a dotted path into the report, e.g. "held_out.detector_recall") `op` `target`."""
    figure: str
    op: str
    target: float

    def __post_init__(self) -> None:
        if self.op not in _COMPARE:
            raise ValueError(f"unknown comparison {self.op!r}; use one of {sorted(_COMPARE)}")

    def __str__(self) -> str:
        return f"{self.figure} {self.op} {self.target}"


def figure_at(report: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path, or None when any part of the path is absent."""
    value: Any = report
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def missed_goals(report: Mapping[str, Any], goals: Iterable[Goal]) -> list[dict[str, Any]]:
    """The goals not met, each with its measured value (None when it was not measured)."""
    missed = []
    for goal in goals:
        value = figure_at(report, goal.figure)
        measured = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
        if not measured:
            missed.append({"goal": str(goal), "value": value, "why": NOT_MEASURED})
        elif not _COMPARE[goal.op](value, goal.target):
            missed.append({"goal": str(goal), "value": value, "why": "missed"})
    return missed


def finish(report: dict[str, Any], goals: Iterable[Goal], *, as_json: bool, indent: int | None = None) -> int:
    """Judge `goals` on `report`, print it (JSON or one line per figure) and return the exit status."""
    goals = list(goals)
    report["goals"] = [str(goal) for goal in goals]
    report["goals_missed"] = missed_goals(report, goals)
    if as_json:
        print(json.dumps(report, indent=indent, default=str))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    for miss in report["goals_missed"]:
        print(f"goal missed: {miss['goal']} (measured: {miss['value']}, {miss['why']})", file=sys.stderr)
    return 1 if report["goals_missed"] else 0
