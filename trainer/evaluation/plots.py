"""The training plot posted with every finished adapter: loss over steps, and preview drift over steps.

Built on a bare matplotlib Figure with the Agg canvas (no pyplot state), so it is safe in the worker thread and
never needs a display.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SMOOTHING_WINDOW = 10


def moving_average(values: Sequence[float], window: int = SMOOTHING_WINDOW) -> np.ndarray:
    """Trailing mean over up to `window` values (the first points average what exists so far)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, values.size + 1), window)
    return (sums[1:] - sums[np.arange(values.size) + 1 - counts]) / counts


def drift_series(preview_history: Mapping) -> dict[str, tuple[list[int], list[float]]]:
    """{'class': (steps, drifts), 'instance': (...)} from the trainer's preview history
    (step -> {"class_drift": x, "instance_drift": y, ...}); keys may be strings after a JSON round trip."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for step in sorted(preview_history, key=int):
        figures = preview_history[step] or {}
        for kind in ("class", "instance"):
            value = figures.get(f"{kind}_drift")
            if isinstance(value, (int, float)):
                steps, values = series.setdefault(kind, ([], []))
                steps.append(int(step))
                values.append(float(value))
    return series


def training_plot_png(loss_history: Sequence[float], preview_history: Mapping | None = None,
                      title: str = "Training") -> bytes:
    """A two-panel PNG: loss per step (raw and smoothed), and preview drift from the base model per step."""
    figure = Figure(figsize=(8, 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, drift_axes = figure.subplots(1, 2)
    _plot_loss(loss_axes, loss_history)
    _plot_drift(drift_axes, drift_series(preview_history or {}))
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _plot_loss(axes, loss_history: Sequence[float]) -> None:
    axes.set_title("Training loss")
    axes.set_xlabel("step")
    if not loss_history:
        axes.text(0.5, 0.5, "no steps recorded", ha="center", va="center", transform=axes.transAxes)
        return
    steps = np.arange(1, len(loss_history) + 1)
    axes.plot(steps, loss_history, color="tab:blue", alpha=0.3, linewidth=1, label="per step")
    axes.plot(steps, moving_average(loss_history), color="tab:blue", linewidth=2,
              label=f"mean of last {SMOOTHING_WINDOW}")
    axes.legend(loc="upper right", fontsize="small")
    axes.grid(alpha=0.3)


def _plot_drift(axes, series: dict[str, tuple[list[int], list[float]]]) -> None:
    axes.set_title("Preview change from the base model")
    axes.set_xlabel("step")
    axes.set_ylabel("mean abs pixel difference")
    if not series:
        axes.text(0.5, 0.5, "no previews during this run", ha="center", va="center", transform=axes.transAxes)
        return
    labels = {"class": "class prompt, no trigger (drift)", "instance": "trigger prompt (learning)"}
    colours = {"class": "tab:red", "instance": "tab:green"}
    for kind, (steps, values) in series.items():
        axes.plot(steps, values, marker="o", color=colours[kind], label=labels[kind])
    axes.set_ylim(bottom=0)
    axes.legend(loc="upper left", fontsize="small")
    axes.grid(alpha=0.3)
