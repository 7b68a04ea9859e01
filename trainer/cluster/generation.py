"""The `generate` job in cluster mode, bot side: plan here, render on a replica, publish here.

Consent is checked when the plan is built (before anything is sent), about once a second while the request waits
or renders on a node (a revoked share or a forget cancels the remote request), and once more in the same
transaction that publishes the outputs. The replica never sees the database or the store.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import ray

from storage import adapters, consent, generations, jobs
from storage.db import transaction
from storage.files import generation_root
from storage.generations import Generation
from trainer.cluster.replica import GenerationReply, GenerationRequest, adapter_set_id, plan_sources
from trainer.job_api import JobContext, JobError, JobOutcome
from trainer.serving.adapter_cache import AdapterSource
from trainer.serving.job import (
    DAMAGED,
    DISK_FULL,
    MODEL_UNAVAILABLE,
    OUT_OF_MEMORY,
    WITHHELD,
    checked_plan,
    write_outputs,
)
from trainer.serving.kinds import estimated_steps
from trainer.serving.requests import ConsentRevoked, RenderPlan

log = logging.getLogger(__name__)

GATEWAY_RESOURCE = "generation_gateway"
POLL_S = 0.2
CONSENT_CHECK_S = 1.0
ERRORS = {"damaged": DAMAGED, "out_of_memory": OUT_OF_MEMORY, "model_unavailable": MODEL_UNAVAILABLE,
          "withheld": WITHHELD}


class GenerationGateway:
    """The Serve deployment handle, shared by the dispatcher's generation slots (kept in worker.resources), and
    the adapter files already put into Ray's object store: a replica fetches a file only when it lacks it."""

    def __init__(self, handle: Any, keep_files: int = 64) -> None:
        self.handle = handle
        self.keep_files = keep_files
        self._files: OrderedDict[str, Any] = OrderedDict()  # AdapterSource.key -> ObjectRef of the file's bytes
        self._lock = threading.Lock()

    def adapter_file(self, source: AdapterSource) -> Any:
        with self._lock:
            ref = self._files.get(source.key)
            if ref is None:  # the key names the content (ids and sha256), so a replaced file gets a new key
                ref = self._files[source.key] = ray.put(source.path.read_bytes())
            self._files.move_to_end(source.key)
            while len(self._files) > self.keep_files:
                self._files.popitem(last=False)
            return ref


def run_remote_generation(ctx: JobContext) -> JobOutcome:
    checked = checked_plan(ctx)  # consent, before anything is sent
    if checked is None:
        return JobOutcome("cancelled")
    gen, plan = checked
    gateway: GenerationGateway = ctx.worker.resources[GATEWAY_RESOURCE]
    request = GenerationRequest(
        plan=plan, adapter_files={s.key: gateway.adapter_file(s) for s in plan_sources(plan)},
        source_picture=ctx.store.read_bytes(plan.source_key) if plan.source_key else None,
    )
    response = gateway.handle.options(multiplexed_model_id=adapter_set_id(plan)).render.remote(request)
    ctx.lease.report(step=0, total=estimated_steps(plan), message="Rendering on the cluster")
    reply, stopped = wait_for_reply(ctx, gen, response)
    if stopped:
        return JobOutcome("cancelled") if stopped == "cancel" else JobOutcome("released", error="paused")
    jobs.set_node(ctx.conn, ctx.job.id, ctx.job.owner, reply.node)
    if reply.error == "stopped":
        return JobOutcome("cancelled")
    if reply.error:
        raise JobError(ERRORS.get(reply.error, DAMAGED))
    return publish(ctx, gen, plan, reply)


def wait_for_reply(ctx: JobContext, gen: Generation, response) -> tuple[GenerationReply | None, str | None]:
    """(reply, None), or (None, 'cancel'/'shutdown') after cancelling the remote request. Raises ConsentRevoked."""
    last_check = time.monotonic()
    while True:
        try:
            return response.result(timeout_s=POLL_S), None
        except TimeoutError:
            pass
        reason = ctx.stop_reason()
        if reason:
            response.cancel()
            return None, reason
        if time.monotonic() - last_check >= CONSENT_CHECK_S:
            last_check = time.monotonic()
            if not _people_still_usable(ctx, gen):
                response.cancel()  # queued or rendering on a node: it stops within a step
                log.info("generation %d: consent withdrawn while on the cluster; cancelled", gen.id)
                raise ConsentRevoked()


def _people_still_usable(ctx: JobContext, gen: Generation) -> bool:
    if not consent.may_use_all(ctx.conn, gen.user_id, gen.guild_id, gen.subject_ids):
        return False
    return all(adapters.get_adapter(ctx.conn, entry.get("adapter_id")) is not None
               for entry in gen.adapters if entry.get("kind") == "subject")


def publish(ctx: JobContext, gen: Generation, plan: RenderPlan, reply: GenerationReply) -> JobOutcome:
    """Write the pictures, then record them if consent still holds and the row still exists (else remove them)."""
    try:
        written = write_outputs(ctx.store, plan, reply.images)
    except OSError as error:
        ctx.store.delete(generation_root(plan.user_id, plan.generation_id))
        if error.errno == errno.ENOSPC:
            raise JobError(DISK_FULL) from None
        raise
    with transaction(ctx.conn):
        usable = _people_still_usable(ctx, gen)
        recorded = usable and generations.set_outputs(ctx.conn, gen.id, written.outputs)
    if not recorded:
        ctx.store.delete(generation_root(plan.user_id, plan.generation_id))
        if not usable:
            raise ConsentRevoked()
        return JobOutcome("cancelled")
    return JobOutcome("succeeded", result={
        "outputs": written.outputs, "grid": written.grid, "contact_sheet": written.contact_sheet, "seed": plan.seed,
        "warnings": reply.warnings, "node": reply.node, "replica": reply.replica,
    })
