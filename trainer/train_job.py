"""The `train` job: subjects and photos from storage in, an adapter in the store and its row out.

The training engine (trainer.training) knows nothing about storage; this module is the bridge: it builds the
TrainConfig, reports progress and previews through the job's lease, honours cancel and shutdown, and records the
adapter only if its subjects still exist when training ends (a forget during training discards it).
"""

from __future__ import annotations

import errno
import io
import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import Image

from storage import adapters, files, photos, subjects
from storage.db import transaction
from storage.subjects import Subject
from trainer.evaluation.job import evaluate_stored_adapter
from trainer.job_api import JobContext, JobError, JobOutcome
from trainer.training.config import PhotoSpec, SubjectSpec, TrainConfig, TrainConfigError
from trainer.training.run import TrainingError, train_adapter

log = logging.getLogger(__name__)

# Payload overrides a job may carry; anything else comes from the family's published defaults.
ALLOWED_OVERRIDES = ("steps", "rank", "learning_rate", "prior_preservation", "resolution", "seed",
                     "train_text_encoder", "num_class_images", "min_snr_gamma", "checkpoint_every",
                     "preview_every")
GONE = "The person (or people) in this training job were deleted, so no adapter was kept."
DISK_FULL = ("The server's disk is full, so the adapter could not be saved; the host needs to free some space, "
             "then train again.")


@contextmanager
def disk_full_is_a_job_error():
    """A full disk is the host's problem to fix, told plainly; the atomic store leaves no half-written file."""
    try:
        yield
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        log.error("disk full: %s", error)
        raise JobError(DISK_FULL) from None


@dataclass(frozen=True)
class TrainingPlan:
    user_id: int
    family: str
    subjects: list[Subject]
    photo_paths: dict[int, list[tuple[str, str]]]  # subject id -> [(absolute crop path, caption)]


def load_plan(ctx: JobContext) -> TrainingPlan:
    payload = ctx.job.payload
    family = payload.get("family", ctx.settings.model_family)
    if family != ctx.settings.model_family:
        raise JobError(f"This job was made for the {family} model, but the worker now runs "
                       f"{ctx.settings.model_family}; start the training again.")
    chosen = [subjects.get_subject(ctx.conn, sid) for sid in payload.get("subject_ids", [])]
    if not chosen or any(s is None for s in chosen):
        raise JobError(GONE)
    photo_paths = {}
    for subject in chosen:
        rows = photos.accepted_photos(ctx.conn, subject.id)
        if not rows:
            raise JobError(f"{subject.trigger} has no accepted photos; add some with /photos add.")
        photo_paths[subject.id] = [(str(ctx.store.resolve(p.crop_path)), p.caption) for p in rows]
    return TrainingPlan(ctx.job.user_id, family, chosen, photo_paths)


def build_config(ctx: JobContext, plan: TrainingPlan):
    settings = ctx.settings
    overrides: dict[str, Any] = {k: v for k, v in ctx.job.payload.get("overrides", {}).items()
                                 if k in ALLOWED_OVERRIDES}
    if settings.train_steps and "steps" not in overrides:
        overrides["steps"] = settings.train_steps
    subject_specs = [
        SubjectSpec(trigger=s.trigger, class_noun=s.class_noun,
                    photos=[PhotoSpec(crop_path=path, caption=caption) for path, caption in plan.photo_paths[s.id]])
        for s in plan.subjects
    ]
    try:
        return TrainConfig.for_family(
            plan.family,
            model_path=None if settings.is_tiny_model else settings.model_path,
            models_dir=settings.models_dir,
            output_dir=settings.data_dir / "tmp" / f"job-{ctx.job.id}" / "adapter",
            checkpoint_dir=ctx.store.resolve(files.job_root(plan.user_id, ctx.job.id) + "/checkpoints"),
            class_cache_dir=settings.cache_dir / "class_images",
            subjects=subject_specs,
            device=settings.device,
            **overrides,
        )
    except TrainConfigError as error:
        raise JobError("The training settings are not usable: " + "; ".join(error.problems)) from None


class JobHooks:
    """Connects the training loop to the job row: progress, previews, cancel, and preemption."""

    def __init__(self, ctx: JobContext, plan: TrainingPlan) -> None:
        self.ctx = ctx
        self.plan = plan
        self.last_preview: str | None = None

    def progress(self, p) -> None:
        parts = [p.message] if p.message else []
        if p.loss is not None:
            parts.append(f"loss {p.loss:.3f}")
        if p.it_per_s:
            parts.append(f"{p.it_per_s:.2f} it/s")
        eta_at = time.time() + p.eta_s if p.eta_s is not None else None
        self.ctx.lease.report(step=p.step, total=p.total, message=" · ".join(parts), eta_at=eta_at)

    def preview(self, step: int, images: dict[str, Image.Image]) -> None:
        """Save instance and class previews side by side, so drift of the class prior is visible at a glance."""
        strip = side_by_side(list(images.values()))
        buffer = io.BytesIO()
        strip.save(buffer, format="PNG")
        rel = files.job_root(self.plan.user_id, self.ctx.job.id) + f"/previews/step-{step}.png"
        self.ctx.store.write_bytes(rel, buffer.getvalue())
        self.ctx.lease.report(preview_path=rel)
        self.last_preview = rel

    def should_stop(self) -> str | None:
        return self.ctx.stop_reason()

    def between_steps(self) -> None:
        self.ctx.between_steps()


def side_by_side(images: list[Image.Image]) -> Image.Image:
    height = max(image.height for image in images)
    strip = Image.new("RGB", (sum(image.width for image in images), height), "white")
    x = 0
    for image in images:
        strip.paste(image.convert("RGB"), (x, 0))
        x += image.width
    return strip


def store_adapter(ctx: JobContext, plan: TrainingPlan, config, result) -> adapters.Adapter | None:
    """Copy the adapter files into the store atomically, then record the row if the subjects still exist."""
    root = files.adapter_root(plan.user_id, ctx.job.id)
    with ctx.store.writing_dir(root) as staging:
        for produced in config.output_dir.iterdir():
            if produced.is_file():
                shutil.copyfile(produced, staging / produced.name)
    weights = f"{root}/{result.adapter_path.name}"
    with transaction(ctx.conn):
        alive = all(subjects.get_subject(ctx.conn, s.id) for s in plan.subjects)
        adapter = adapters.record_adapter(
            ctx.conn, owner_id=plan.user_id, job_id=ctx.job.id, family=plan.family,
            base_model=ctx.settings.base_model_id, path=weights, sha256=ctx.store.sha256(weights),
            size_bytes=ctx.store.size(weights), params=_params(config, result),
            subject_ids=[s.id for s in plan.subjects],
        ) if alive else None
    if adapter is None:
        ctx.store.delete(root)
    return adapter


def _params(config, result) -> dict[str, Any]:
    return {
        "family": config.family, "steps": result.steps_done, "rank": config.rank, "alpha": config.alpha,
        "learning_rate": config.learning_rate, "resolution": config.resolution, "seed": config.seed,
        "prior_preservation": config.prior_preservation, "prior_loss_weight": config.prior_loss_weight,
        "train_text_encoder": config.train_text_encoder, "triggers": config.triggers(),
        "class_nouns": config.class_nouns(), "final_loss": result.final_loss,
        "kohya_export": result.metadata.get("kohya_export"),
    }


def run_training_job(ctx: JobContext) -> JobOutcome:
    if subjects.is_forgotten(ctx.conn, ctx.job.user_id):
        return JobOutcome("cancelled", error="deleted on request")
    plan = load_plan(ctx)
    config = build_config(ctx, plan)
    hooks = JobHooks(ctx, plan)
    try:
        with disk_full_is_a_job_error():
            result = train_adapter(config, hooks)
    except TrainingError as error:
        raise JobError(f"{error.message} {error.suggestion}".strip()) from None
    if result.stopped == "cancel":
        _cleanup(ctx, plan, config)
        return JobOutcome("cancelled")
    if result.stopped == "shutdown":
        return JobOutcome("released", error=f"paused at step {result.steps_done}; it will resume from there")
    with disk_full_is_a_job_error():
        adapter = store_adapter(ctx, plan, config, result)
    if adapter is None:
        _cleanup(ctx, plan, config)
        return JobOutcome("cancelled", error=GONE)
    metrics, plot_path = evaluate_stored_adapter(ctx, plan, config, result, adapter)  # never raises
    _cleanup(ctx, plan, config, keep_previews=True)
    return JobOutcome("succeeded", result={
        "adapter_id": adapter.id, "version": adapter.version, "final_loss": result.final_loss,
        "steps": result.steps_done, "metrics": metrics, "plot_path": plot_path,
        "preview_path": hooks.last_preview, "kohya_path": _kohya_rel(adapter, result),
        "class_images_generated": result.class_images_generated,
    })


def _kohya_rel(adapter: adapters.Adapter, result) -> str | None:
    if result.kohya_path is None:
        return None
    return adapter.path.rsplit("/", 1)[0] + "/" + result.kohya_path.name


def _cleanup(ctx: JobContext, plan: TrainingPlan, config, keep_previews: bool = False) -> None:
    """Checkpoints and scratch files are only needed until the job ends."""
    shutil.rmtree(config.output_dir.parent, ignore_errors=True)
    root = files.job_root(plan.user_id, ctx.job.id)
    ctx.store.delete(root + "/checkpoints")
    if not keep_previews:
        ctx.store.delete(root)
