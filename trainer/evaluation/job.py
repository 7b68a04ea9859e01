"""Evaluation inside the train job: runs after the adapter is stored, and can never lose it.

Measuring is its own stage in the job row's message ("Measuring likeness 3/13", with an ETA from its pace), so it never
looks like a hang; a cancel or a worker shutdown ends it between two renders, keeping the adapter. The metrics go
on the adapter row (`set_adapter_metrics`) and into the job result; the plot goes into the
adapter's store folder as `training.png`, so the export carries it and the bot posts it with the finished notice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from storage import adapters, files
from trainer.evaluation.evaluate import (
    PLOT_NAME,
    EvaluationStopped,
    EvaluationSubject,
    evaluate_adapter,
    options_from_settings,
)
from trainer.evaluation.plots import training_plot_png

log = logging.getLogger(__name__)

FAILED = "The adapter was saved, but measuring it failed; the host can find the details in the worker log."
STOPPED = {
    "cancel": "Measuring the likeness was cancelled; the adapter is saved and ready to use.",
    "shutdown": "Measuring the likeness was cut short because the worker was stopping; the adapter is saved and "
                "ready to use.",
}
STAGE = "Measuring likeness"


class EvaluationProgress:
    """Reports the evaluation's renders on the job row, with an ETA from their pace so far. Step and total stay the
    training's (they say how far training got, e.g. for a cancel); the stage and its count are in the message."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.started
        eta_at = time.time() + elapsed / done * (total - done) if done else None
        self.ctx.lease.report(message=f"{STAGE} {done}/{total}", eta_at=eta_at)

    def stop_reason(self) -> str | None:
        """Only a cancel or a stopping worker ends measuring (not stepping aside for generation: it is short)."""
        if self.ctx.lease.cancel_requested:
            return "cancel"
        if self.ctx.worker.stopping or self.ctx.lease.lost:
            return "shutdown"
        return None


def evaluate_stored_adapter(ctx, plan, config, result, adapter: adapters.Adapter) -> tuple[dict, str | None]:
    """(metrics, store-relative plot path or None). Any failure is logged and stored as {"error": ...}."""
    plot_rel = _store_plot(ctx, plan, result)
    progress = EvaluationProgress(ctx)
    try:
        report = evaluate_adapter(
            config.family, config.model_path, config.models_dir, ctx.store.resolve(adapter.path),
            [EvaluationSubject(s.trigger, s.class_noun, tuple(Path(p.crop_path) for p in s.photos))
             for s in config.subjects],
            device=config.device, loss_history=result.loss_history, preview_history=result.preview_history,
            options=_options(ctx, config), plot=False, on_progress=progress, should_stop=progress.stop_reason,
        )
        metrics = report.metrics
    except EvaluationStopped as stopped:
        log.info("evaluation of adapter %d stopped: %s", adapter.id, stopped.reason)
        metrics = {"error": STOPPED.get(stopped.reason, STOPPED["shutdown"])}
    except Exception as error:  # evaluation is a bonus: the adapter is already stored
        log.exception("evaluating adapter %d of job %d failed", adapter.id, ctx.job.id)
        metrics = {"error": f"{FAILED} ({type(error).__name__})"}
    adapters.set_adapter_metrics(ctx.conn, adapter.id, metrics)
    return metrics, plot_rel


def _store_plot(ctx, plan, result) -> str | None:
    """The loss/drift plot needs no images, so it is made even when image evaluation fails."""
    try:
        png = training_plot_png(result.loss_history, result.preview_history,
                                title="Training: " + ", ".join(s.trigger for s in plan.subjects))
        return ctx.store.write_bytes(files.adapter_root(plan.user_id, ctx.job.id) + "/" + PLOT_NAME, png)
    except Exception:
        log.exception("the training plot of job %d could not be made", ctx.job.id)
        return None


def _options(ctx, config):
    from dataclasses import replace

    return replace(options_from_settings(ctx.settings), resolution=config.resolution,
                   quantize_nf4=config.quantize_base == "nf4")
