"""The `generate` and `class_images` job handlers.

`run_generation_job`: payload {"generation_id"}. The generations row says everything else. Consent is checked
again before rendering and once more, in the same transaction as `set_outputs`, before the result is published;
a refusal writes nothing (or removes what was written) and fails with one sentence that names nobody. A row
deleted meanwhile (the user deleted it, or forgot themselves) ends the job as cancelled with no files left.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from dataclasses import dataclass, field

from storage import adapters, consent, generations, subjects
from storage.db import transaction
from storage.files import FileStore, generation_root
from storage.generations import Generation
from trainer.families import family_spec
from trainer.serving.adapter_cache import AdapterFileError, AdapterSource
from trainer.serving.cards import shrink_to_fit
from trainer.serving.kinds import RenderedImage, Renderer, RenderProgress, RenderStopped, estimated_steps
from trainer.serving.pngmeta import format_parameters, png_bytes
from trainer.serving.requests import ConsentRevoked, RenderPlan, build_plan
from intake.captions import blocked_word
from trainer.serving.safety import blocked_message
from trainer.serving.server import GenerationServer
from trainer.serving.sheets import make_contact_sheet, make_grid
from trainer.training.class_images import ensure_class_images
from trainer.training.config import TrainConfig
from trainer.training.memory import is_out_of_memory
from trainer.job_api import JobContext, JobError, JobOutcome

log = logging.getLogger(__name__)

SERVER_RESOURCE = "generation_server"
WITHHELD = "The picture was withheld by this server's safety filter; try a different prompt."
DAMAGED = "An adapter file of this picture is damaged; its owner can retrain it with /train."
OUT_OF_MEMORY = "The GPU ran out of memory making this picture; try a smaller aspect, fewer images, or try again later."
DISK_FULL = "The server's disk is full, so the picture could not be saved; the host needs to free some space."
MODEL_UNAVAILABLE = "The worker could not load its base model; the host should check LIKENESS_MODEL_PATH."
BAD_PAYLOAD = "This generation job is malformed; make the picture again with /imagine."
CONSENT_STOP = "consent"


def generation_server(worker) -> GenerationServer:
    """The worker's one generation server, created on first use and kept in `worker.resources`."""
    server = worker.resources.get(SERVER_RESOURCE)
    if server is None:
        server = worker.resources[SERVER_RESOURCE] = GenerationServer(worker.settings)
    return server


def checked_plan(ctx: JobContext) -> tuple[Generation, RenderPlan] | None:
    """The job's generation and its render plan, consent and blocklist checked; None when the generation is gone.
    Local and cluster generation both start here."""
    generation_id = ctx.job.payload.get("generation_id")
    if isinstance(generation_id, bool) or not isinstance(generation_id, int):
        raise JobError(BAD_PAYLOAD)
    gen = generations.get_generation(ctx.conn, generation_id)
    if gen is None:
        return None
    plan = build_plan(ctx.conn, ctx.store, gen, ctx.settings.model_family)
    word = blocked_word([plan.prompt, plan.greeting or "", *plan.headshot_prompts], ctx.settings.prompt_blocklist)
    if word is not None:
        raise JobError(blocked_message(word))
    return gen, plan


def run_generation_job(ctx: JobContext) -> JobOutcome:
    server = generation_server(ctx.worker)
    evict_unusable_adapters(ctx.conn, server)  # first, so a refused plan still drops a forgotten person's weights
    checked = checked_plan(ctx)
    if checked is None:
        return JobOutcome("cancelled")
    gen, plan = checked
    try:
        images, warnings = _render(ctx, server, plan, _stop_reason_with_consent(ctx, gen))
    except RenderStopped as stop:
        if stop.reason == CONSENT_STOP:
            raise ConsentRevoked() from None
        return JobOutcome("cancelled") if stop.reason == "cancel" else JobOutcome("released", error="paused")
    total = estimated_steps(plan)
    ctx.lease.report(step=total, total=total, message="Saving")
    try:
        files = write_outputs(ctx.store, plan, images)
    except OSError as error:
        _remove(ctx.store, plan)
        if error.errno == errno.ENOSPC:
            raise JobError(DISK_FULL) from None
        raise
    return _publish(ctx, gen, plan, files, warnings)


def _stop_reason_with_consent(ctx: JobContext, gen: Generation):
    """The job's stop reason, or CONSENT_STOP once someone in the picture is no longer usable (an unshare or a
    deletion mid-render): checked before every denoising step, so the render stops within one step, as cancel."""
    def stop_reason() -> str | None:
        reason = ctx.stop_reason()
        if reason is None and not _people_still_usable(ctx.conn, gen):
            return CONSENT_STOP
        return reason

    return stop_reason


def _render(ctx: JobContext, server: GenerationServer, plan: RenderPlan,
            stop_reason) -> tuple[list[RenderedImage], list[str]]:
    try:
        runtime = server.runtime(plan.family)
    except (OSError, ValueError) as error:
        log.error("could not load the %s base model: %s", plan.family, error)
        raise JobError(MODEL_UNAVAILABLE) from None
    progress = RenderProgress(ctx.lease.report, stop_reason, estimated_steps(plan))
    try:
        rendered = Renderer(plan, runtime, progress, ctx.store, server.model_label(plan.family),
                            server.model_hash(plan.family)).render()
    except AdapterFileError as error:
        log.warning("generation %d: %s", plan.generation_id, error)
        raise JobError(DAMAGED) from None
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        out_of_memory = True
    else:
        out_of_memory = False
    if out_of_memory:  # outside the except block, so the traceback's tensors can be freed
        server.free_memory()
        raise JobError(OUT_OF_MEMORY)
    return _safety_filtered(server, rendered.images, rendered.warnings)


def _safety_filtered(server: GenerationServer, images: list[RenderedImage],
                     warnings: list[str]) -> tuple[list[RenderedImage], list[str]]:
    nsfw = server.nsfw_filter
    if nsfw is None:
        return images, warnings
    flags = nsfw.flags([item.image for item in images])
    kept = [item for item, flagged in zip(images, flags) if not flagged]
    if not kept:
        raise JobError(WITHHELD)
    if len(kept) < len(images):
        warnings = [*warnings, f"{len(images) - len(kept)} of the pictures were withheld by the safety filter."]
    return kept, warnings


@dataclass
class OutputFiles:
    outputs: list[str] = field(default_factory=list)  # the single pictures, numbered from 1
    grid: str | None = None
    contact_sheet: str | None = None

    @property
    def written(self) -> list[str]:
        return [*self.outputs, *(key for key in (self.grid, self.contact_sheet) if key)]


def write_outputs(store: FileStore, plan: RenderPlan, images: list[RenderedImage]) -> OutputFiles:
    """Every picture as `<generation root>/N.png` (atomic writes), plus the grid or the contact sheet."""
    root = generation_root(plan.user_id, plan.generation_id)
    files = OutputFiles()
    for number, item in enumerate(images, start=1):
        text = format_parameters(item.parameters)
        if plan.kind == "card":
            _, data = shrink_to_fit(item.image, lambda image: png_bytes(image, text, optimize=True))
        else:
            data = png_bytes(item.image, text)
        files.outputs.append(store.write_bytes(f"{root}/{number}.png", data))
    if plan.kind == "headshots":
        title = f"Headshots of {plan.people[0].prompt_name}" if plan.people else "Headshots"
        sheet = make_contact_sheet([i.image for i in images], [i.label or "" for i in images], title)
        files.contact_sheet = store.write_bytes(f"{root}/contact_sheet.png", png_bytes(sheet, None))
    elif len(images) > 1:
        grid = make_grid([i.image for i in images])
        files.grid = store.write_bytes(f"{root}/grid.png", png_bytes(grid, format_parameters(images[0].parameters)))
    return files


def _publish(ctx: JobContext, gen: Generation, plan: RenderPlan, files: OutputFiles,
             warnings: list[str]) -> JobOutcome:
    """Record the outputs if consent still holds and the row still exists; otherwise remove the files."""
    try:
        with transaction(ctx.conn):
            _check_people_still_usable(ctx.conn, gen)
            recorded = generations.set_outputs(ctx.conn, gen.id, files.outputs)
    except ConsentRevoked:
        _remove(ctx.store, plan)
        raise
    if not recorded:
        _remove(ctx.store, plan)
        return JobOutcome("cancelled")
    result = {"outputs": files.outputs, "grid": files.grid, "contact_sheet": files.contact_sheet,
              "seed": plan.seed, "warnings": warnings}
    return JobOutcome("succeeded", result=result)


def _people_still_usable(conn: sqlite3.Connection, gen: Generation) -> bool:
    if not consent.may_use_all(conn, gen.user_id, gen.guild_id, gen.subject_ids):
        return False
    return all(adapters.get_adapter(conn, entry.get("adapter_id")) is not None
               for entry in gen.adapters if entry.get("kind") == "subject")


def _check_people_still_usable(conn: sqlite3.Connection, gen: Generation) -> None:
    if not _people_still_usable(conn, gen):
        raise ConsentRevoked()


def _remove(store: FileStore, plan: RenderPlan) -> None:
    store.delete(generation_root(plan.user_id, plan.generation_id))


def evict_unusable_adapters(conn: sqlite3.Connection, server: GenerationServer) -> list[str]:
    """Evict cached adapters whose row is gone or whose subjects are all deleted, and replaced or removed styles."""
    usable = []
    for adapter_id in server.cached_adapter_ids():
        adapter = adapters.get_adapter(conn, adapter_id)
        if adapter is not None and any(subjects.get_subject(conn, s) for s in adapter.subject_ids):
            usable.append(adapter_id)
    style_keys = [AdapterSource.for_style(s.id, s.sha256, s.path).key for s in generations.list_styles(conn)]
    return server.evict_missing(usable, style_keys)


def class_images_job(ctx: JobContext) -> JobOutcome:
    """Prior-preservation class images made ahead of training, on the server's resident pipeline when it is the
    same base model (no second copy), else on a pipeline loaded for the job."""
    payload = ctx.job.payload
    try:
        family, prompt = str(payload["family"]), str(payload["class_prompt"])
        resolution, count = int(payload["resolution"]), int(payload["count"])
        family_spec(family)
    except (KeyError, TypeError, ValueError):
        raise JobError("This class-image job is malformed; it will be made again by the next training job.") from None
    settings = ctx.settings
    base_model = payload.get("base_model") or settings.base_model_id
    same_model = family == settings.model_family and base_model == settings.base_model_id
    server = generation_server(ctx.worker)
    pipeline = server.runtime(family).pipe if same_model else None
    model_path = None if family_spec(family).tiny else (settings.model_path if same_model else base_model)
    ctx.lease.report(step=0, total=count, message=f"Preparing class images: {prompt}")
    paths, made = ensure_class_images(
        family, model_path, settings.models_dir, settings.cache_dir / "class_images",
        prompt, resolution, count, TrainConfig.model_fields["seed"].default, server.device, pipeline=pipeline,
    )
    ctx.lease.report(step=count, total=count, message="Class images ready")
    return JobOutcome("succeeded", result={"count": len(paths), "generated": made})


def evict_unusable_adapters_when_idle(worker) -> None:
    """Idle task: a forgotten user's adapters leave worker memory without waiting for the next generation."""
    server = worker.resources.get(SERVER_RESOURCE)
    if server is not None:
        evict_unusable_adapters(worker.conn, server)
