"""The evaluation stage on the job row: named, counted, with an ETA, and ended by a cancel or a stopping worker."""

from types import SimpleNamespace

import pytest
from PIL import Image

from trainer.evaluation.evaluate import EvaluationOptions, EvaluationStopped, EvaluationSubject, evaluate_adapter
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


class FakePipeline:
    """Stands in for a loaded base pipeline: grey pictures, and the adapter calls the evaluation makes."""

    def __init__(self) -> None:
        self.adapters: list[str] = []

    def __call__(self, prompt, generator, **kwargs):
        return SimpleNamespace(images=[Image.new("RGB", (64, 64), (90 + 10 * len(self.adapters),) * 3)
                                       for _ in prompt])

    def get_list_adapters(self):
        return {"unet": list(self.adapters)}

    def load_lora_weights(self, folder, weight_name, adapter_name):
        self.adapters.append(adapter_name)

    def set_adapters(self, names, weights):
        pass

    def delete_adapters(self, names):
        self.adapters = [a for a in self.adapters if a not in names]


def _subject(tmp_path):
    crop = tmp_path / "crop.png"
    Image.new("RGB", (64, 64), (120, 100, 90)).save(crop)
    return [EvaluationSubject("rraj", "person", (crop,))]


def test_evaluate_adapter_reports_every_render_and_stops_between_renders_when_asked(tmp_path):
    options = EvaluationOptions(seeds=(5,), neutral_prompts=())
    seen = []
    evaluate_adapter("tiny-sd15", None, tmp_path, tmp_path / "lora.safetensors", _subject(tmp_path), options=options,
                     pipeline=FakePipeline(), plot=False, on_progress=lambda done, total: seen.append((done, total)))
    # the pipeline (already loaded here), then 3 prompts (class + 2 trigger prompts), base and adapted
    assert seen == [(done, 7) for done in range(8)]

    seen.clear()
    pipe = FakePipeline()
    with pytest.raises(EvaluationStopped) as stopped:
        evaluate_adapter("tiny-sd15", None, tmp_path, tmp_path / "lora.safetensors", _subject(tmp_path),
                         options=options, pipeline=pipe, plot=False, on_progress=lambda done, total: seen.append(done),
                         should_stop=lambda: "cancel" if len(seen) >= 6 else None)
    assert stopped.value.reason == "cancel" and seen == [0, 1, 2, 3, 4, 5]
    assert pipe.adapters == []  # stopped while the adapter was loaded: it is taken off again
