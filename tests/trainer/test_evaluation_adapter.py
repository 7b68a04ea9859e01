"""evaluate_adapter on a real tiny adapter: metrics, labels, the plot, and known inputs (a zero adapter)."""

import io

import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.trainer.evaluation_fixtures import tiny_clip_path  # noqa: F401 (fixture)
from tests.trainer.training_fixtures import (  # noqa: F401 (fixtures)
    make_config,
    models_dir,
    photo_dir,
    shared_class_cache,
    subject,
)
from trainer.evaluation.embedders import FALLBACK_METHOD
from trainer.evaluation.evaluate import EvaluationOptions, EvaluationStopped, EvaluationSubject, evaluate_adapter

ONE_SEED = EvaluationOptions(seeds=(5,), neutral_prompts=())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, models_dir, shared_class_cache, photo_dir):  # noqa: F811
    from trainer.training.run import train_adapter

    job = tmp_path_factory.mktemp("eval-job")
    config = make_config("tiny-sd15", job, models_dir, shared_class_cache, [subject(photo_dir)], steps=6,
                         learning_rate=5e-3, preview_every=3)
    result = train_adapter(config)
    crops = tuple(p.crop_path for p in config.subjects[0].photos)
    return config, result, [EvaluationSubject("rraj", "person", crops)]


def _zeroed_copy(adapter_path, folder):
    """The same adapter with every LoRA up/B matrix zero: it changes nothing, exactly."""
    folder.mkdir()
    weights = load_file(adapter_path)
    zeroed = {k: (v.zero_() if "lora_B" in k or "lora.up" in k or "lora_up" in k else v) for k, v in weights.items()}
    assert any(v.abs().sum() == 0 for v in zeroed.values())
    save_file(zeroed, folder / adapter_path.name, metadata={"format": "pt"})
    return folder / adapter_path.name


@pytest.mark.slow
def test_metrics_with_the_fallback_are_labelled_and_the_plot_is_written(trained, models_dir, tmp_path,  # noqa: F811
                                                                        monkeypatch):
    config, result, subjects = trained
    monkeypatch.setattr("trainer.evaluation.embedders.face_model_dir", lambda configured=None: None)
    report = evaluate_adapter("tiny-sd15", None, models_dir, result.adapter_path, subjects, device="cpu",
                              loss_history=result.loss_history, preview_history=result.preview_history,
                              out_dir=tmp_path)
    metrics = report.metrics
    assert metrics["drift"] > 0 and "SSIM" in metrics["drift_metric"]
    assert 0 <= metrics["subject_fidelity"] <= 1 and 0 <= metrics["subject_fidelity_base"] <= 1
    assert metrics["fidelity_method"] == FALLBACK_METHOD and metrics["fidelity_method"].startswith("fallback:")
    assert "fallback" in metrics["label"]
    # "likeness 0.00 (base model 0.00)" read as a failure on the demo: the label says why it is expected.
    assert metrics["label"].startswith("likeness ") and "random weights draw no faces" in metrics["label"]
    assert "prompt_fidelity" not in metrics and metrics["prompt_fidelity_method"].startswith("not measured")
    # 3 drift prompts (class + 2 neutral) and 2 trigger prompts, 2 seeds, base and adapted.
    assert metrics["evaluation"]["images"] == 20 and len(report.images["adapted"]) == 10
    assert report.plot_path == tmp_path / "training.png" and report.plot_path.read_bytes() == report.plot_png
    with Image.open(io.BytesIO(report.plot_png)) as plot:
        assert plot.format == "PNG"


@pytest.mark.slow
def test_an_adapter_that_changes_nothing_has_zero_drift(trained, models_dir, tmp_path):  # noqa: F811
    _, result, subjects = trained
    zero = _zeroed_copy(result.adapter_path, tmp_path / "zero")
    nothing = evaluate_adapter("tiny-sd15", None, models_dir, zero, subjects, device="cpu", options=ONE_SEED)
    real = evaluate_adapter("tiny-sd15", None, models_dir, result.adapter_path, subjects, device="cpu",
                            options=ONE_SEED)
    assert nothing.metrics["drift"] == pytest.approx(0.0, abs=1e-6)
    assert nothing.metrics["subject_fidelity"] == pytest.approx(nothing.metrics["subject_fidelity_base"])
    assert real.metrics["drift"] > nothing.metrics["drift"] + 1e-4


@pytest.mark.slow
def test_a_local_clip_model_measures_fidelity_and_prompt_fidelity(trained, models_dir, tiny_clip_path,  # noqa: F811
                                                                   monkeypatch):
    import torch

    from trainer.families import get_family

    _, result, subjects = trained
    family = get_family("tiny-sd15")
    pipe = family.load_pipeline(family.resolve_model_path(None, models_dir), "cpu", torch.float32)
    monkeypatch.setattr("trainer.evaluation.embedders.face_model_dir", lambda configured=None: None)  # CLIP-I first
    options = EvaluationOptions(seeds=(5,), neutral_prompts=(), clip_model_path=str(tiny_clip_path))
    report = evaluate_adapter("tiny-sd15", None, models_dir, result.adapter_path, subjects, options=options,
                              pipeline=pipe, plot=False)
    metrics = report.metrics
    assert metrics["fidelity_method"].startswith("CLIP-I") and "fallback" not in metrics["label"]
    assert -1 <= metrics["prompt_fidelity"] <= 1 and metrics["prompt_fidelity_method"].startswith("CLIP-T")
    assert report.plot_png is None and report.plot_path is None
    assert not pipe.get_list_adapters()  # a borrowed pipeline is handed back without the adapter


def test_no_subjects_is_refused(tmp_path):
    with pytest.raises(ValueError):
        evaluate_adapter("tiny-sd15", None, tmp_path, tmp_path / "x.safetensors", [], device="cpu")



@pytest.mark.slow
def test_progress_counts_every_render_and_a_stop_ends_measuring_between_renders(trained, models_dir):  # noqa: F811
    _, result, subjects = trained
    quick = EvaluationOptions(seeds=(5,), neutral_prompts=(), inference_steps=2)
    seen = []
    report = evaluate_adapter("tiny-sd15", None, models_dir, result.adapter_path, subjects, device="cpu",
                              options=quick, plot=False, on_progress=lambda done, total: seen.append((done, total)))
    # loading the pipeline, then 3 prompts (class + 2 trigger prompts) rendered base and adapted
    assert seen == [(done, 7) for done in range(8)]
    assert report.metrics["evaluation"]["images"] == 6

    seen.clear()
    with pytest.raises(EvaluationStopped) as stopped:
        evaluate_adapter("tiny-sd15", None, models_dir, result.adapter_path, subjects, device="cpu", options=quick,
                         plot=False, on_progress=lambda done, total: seen.append(done),
                         should_stop=lambda: "cancel" if len(seen) >= 3 else None)
    assert stopped.value.reason == "cancel" and seen == [0, 1, 2]
