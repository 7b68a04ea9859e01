"""The evaluation stage on the job row: named, counted, with an ETA, and ended by a cancel or a stopping worker."""

from types import SimpleNamespace

from trainer.evaluation.job import STAGE, EvaluationProgress


class FakeLease:
    def __init__(self) -> None:
        self.reports: list[dict] = []
        self.cancel_requested = False
        self.lost = False

    def report(self, **progress) -> None:
        self.reports.append(progress)


def _progress():
    ctx = SimpleNamespace(lease=FakeLease(), worker=SimpleNamespace(stopping=False))
    return ctx, EvaluationProgress(ctx)


def test_each_render_is_reported_as_the_measuring_stage_with_an_eta_once_there_is_a_pace():
    ctx, progress = _progress()
    progress(0, 7)
    progress(3, 7)
    first, later = ctx.lease.reports
    assert first == {"message": f"{STAGE} 0/7", "eta_at": None}
    assert later["message"] == "Measuring likeness 3/7" and later["eta_at"] is not None
    assert "step" not in later and "total" not in later  # the row keeps the training's own step count


def test_only_a_cancel_or_a_stopping_worker_stops_measuring():
    ctx, progress = _progress()
    assert progress.stop_reason() is None
    ctx.worker.stopping = True
    assert progress.stop_reason() == "shutdown"
    ctx.lease.cancel_requested = True
    assert progress.stop_reason() == "cancel"
