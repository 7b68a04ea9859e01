"""The `train` job in cluster mode, bot side: ship the job to a node, follow it, and keep what it sends back.

The job is planned exactly as in local mode (trainer.train_job). Before anything leaves this machine, and again
before every resend, the subjects are checked to still exist. Each checkpoint the node writes is stored here at
once, under the same key as in local mode, so when a node dies the job starts again on another node from the
newest one and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ray
from ray.exceptions import RayActorError

from storage import files, jobs, subjects
from storage.files import FileStore, UnsafePathError
from trainer.cluster.training_node import CHECKPOINT_FILE, NodeEvent, TrainingNode, TrainingShipment
from trainer.families import get_family
from trainer.job_api import JobContext, JobError, JobOutcome
from trainer.train_job import (
    GONE,
    JobHooks,
    TrainingPlan,
    build_config,
    disk_full_is_a_job_error,
    load_plan,
    store_adapter,
)
from trainer.training.checkpoints import KEEP, list_checkpoints
from trainer.training.class_images import class_cache_key
from trainer.training.config import class_prompt_for

log = logging.getLogger(__name__)

POLL_S = 0.2
MAX_FAILOVERS = 5
NODES_LOST = "The cluster lost the node running this training {n} times in a row; the host should check the nodes."


class NodeLost(Exception):
    """The actor (or its whole node) died; the job goes on elsewhere from its last stored checkpoint."""


def training_actor(settings) -> Any:
    """A TrainingNode actor that needs a share of one GPU (or of the resource standing in for one)."""
    share = settings.cluster_train_gpu
    resource = settings.cluster_gpu_resource
    options: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 4, "max_restarts": 0}
    if resource == "GPU":
        options["num_gpus"] = share
    else:
        options["resources"] = {resource: share}
    return ray.remote(TrainingNode).options(**options).remote()


def run_remote_training(ctx: JobContext) -> JobOutcome:
    if subjects.is_forgotten(ctx.conn, ctx.job.user_id):
        return JobOutcome("cancelled", error="deleted on request")
    plan = load_plan(ctx)
    config = build_config(ctx, plan)
    hooks = JobHooks(ctx, plan)
    for _attempt in range(MAX_FAILOVERS + 1):
        if not _subjects_alive(ctx, plan):  # consent: nothing is sent for someone deleted meanwhile
            _cleanup(ctx, plan, config)
            return JobOutcome("cancelled", error=GONE)
        actor = training_actor(ctx.settings)
        try:
            reply = follow(ctx, actor, ship(ctx, plan, config), hooks)
        except NodeLost as error:
            log.warning("job %d: %s; resuming from its last checkpoint on another node", ctx.job.id, error)
            jobs.set_node(ctx.conn, ctx.job.id, ctx.job.owner, None)
            continue
        finally:
            ray.kill(actor, no_restart=True)
        return finish(ctx, plan, config, hooks, reply)
    raise JobError(NODES_LOST.format(n=MAX_FAILOVERS + 1))


def _subjects_alive(ctx: JobContext, plan: TrainingPlan) -> bool:
    if subjects.is_forgotten(ctx.conn, plan.user_id):
        return False
    return all(subjects.get_subject(ctx.conn, s.id) is not None for s in plan.subjects)


def ship(ctx: JobContext, plan: TrainingPlan, config) -> TrainingShipment:
    """The job's photos, cached class images and newest checkpoints, with the config pointed at the node."""
    scratch = Path(ctx.settings.cluster_scratch_dir) / f"job-{ctx.job.id}"
    photos: dict[str, bytes] = {}
    subject_specs = []
    for s_index, subject in enumerate(config.subjects):
        specs = []
        for p_index, photo in enumerate(subject.photos):
            node_path = scratch / "photos" / f"{s_index}-{p_index}{Path(photo.crop_path).suffix}"
            photos[str(node_path)] = Path(photo.crop_path).read_bytes()
            specs.append(photo.model_copy(update={"crop_path": node_path}))
        subject_specs.append(subject.model_copy(update={"photos": specs}))
    node_config = config.model_copy(update={
        "subjects": subject_specs, "output_dir": scratch / "adapter", "checkpoint_dir": scratch / "checkpoints",
        "class_cache_dir": scratch / "class_images",
    })
    checkpoints = {step: (folder / CHECKPOINT_FILE).read_bytes()
                   for step, folder in list_checkpoints(config.checkpoint_dir) if (folder / CHECKPOINT_FILE).is_file()}
    return TrainingShipment(job_id=ctx.job.id, config=node_config, scratch=str(scratch), photos=photos,
                            class_images=_cached_class_images(config), checkpoints=checkpoints)


def _cached_class_images(config) -> dict[str, bytes]:
    if not config.prior_preservation:
        return {}
    family = get_family(config.family)
    shipped = {}
    for noun in config.class_nouns():
        key = class_cache_key(family, config.model_path, class_prompt_for(noun), config.resolution)
        folder = Path(config.class_cache_dir) / key
        if folder.is_dir():
            shipped.update({f"{key}/{p.name}": p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()})
    return shipped


def follow(ctx: JobContext, actor, shipment: TrainingShipment, hooks: JobHooks) -> dict[str, Any]:
    """Relay the node's events into the job row and the store until `train` returns; stop it when asked."""
    where_ref, train_ref = actor.where.remote(), actor.train.remote(shipment)
    poll_ref, node, stop_sent = None, None, None
    ctx.lease.report(message="Waiting for a free GPU on the cluster")
    try:
        while True:
            finished, _ = ray.wait([train_ref], timeout=POLL_S)
            if node is None and ray.wait([where_ref], timeout=0)[0]:
                node = ray.get(where_ref)
                jobs.set_node(ctx.conn, ctx.job.id, ctx.job.owner, node)
            if poll_ref is None:
                poll_ref = actor.poll.remote()
            if ray.wait([poll_ref], timeout=0)[0]:
                apply_events(ctx, hooks, ray.get(poll_ref))
                poll_ref = None
            reason = ctx.stop_reason()
            if reason and node is None:
                return {"stopped": reason, "steps_done": 0}  # never started: nothing to save
            if reason and reason != stop_sent:
                actor.stop.remote(reason)
                stop_sent = reason
            if finished:
                reply = ray.get(train_ref)
                apply_events(ctx, hooks, ray.get(actor.poll.remote()))
                return reply
    except RayActorError as error:
        raise NodeLost(f"node {node or 'not yet known'} went away ({type(error).__name__})") from None


def apply_events(ctx: JobContext, hooks: JobHooks, events: list[NodeEvent]) -> None:
    for event in events:
        if event.kind == "progress":
            hooks.progress(event.progress)
        elif event.kind == "preview":
            with disk_full_is_a_job_error():
                hooks.preview(event.step, event.images)
        elif event.kind == "checkpoint":
            with disk_full_is_a_job_error():
                store_checkpoint(ctx, event.step, event.data)


def checkpoints_root(ctx: JobContext) -> str:
    return files.job_root(ctx.job.user_id, ctx.job.id) + "/checkpoints"


def store_checkpoint(ctx: JobContext, step: int, data: bytes) -> None:
    """Keep a shipped checkpoint where local mode keeps it (atomic write), and only the newest KEEP."""
    root = checkpoints_root(ctx)
    ctx.store.write_bytes(f"{root}/step-{step:08d}/{CHECKPOINT_FILE}", data)
    for old_step, _folder in list_checkpoints(ctx.store.resolve(root))[:-KEEP]:
        ctx.store.delete(f"{root}/step-{old_step:08d}")


def finish(ctx: JobContext, plan: TrainingPlan, config, hooks: JobHooks, reply: dict[str, Any]) -> JobOutcome:
    if "error" in reply:
        raise JobError(reply["error"])
    _keep_class_images(ctx, reply.get("class_images", {}))
    if reply["stopped"] == "cancel":
        _cleanup(ctx, plan, config)
        return JobOutcome("cancelled")
    if reply["stopped"] == "shutdown":
        return JobOutcome("released", error=f"paused at step {reply['steps_done']}; it will resume from there")
    config.output_dir.mkdir(parents=True, exist_ok=True)
    for name, data in reply["files"].items():
        (config.output_dir / Path(name).name).write_bytes(data)
    result = SimpleNamespace(
        adapter_path=Path(reply["adapter_name"]), steps_done=reply["steps_done"], final_loss=reply["final_loss"],
        metadata=reply["metadata"], kohya_path=Path(reply["kohya_name"]) if reply.get("kohya_name") else None,
    )
    with disk_full_is_a_job_error():
        adapter = store_adapter(ctx, plan, config, result)
    if adapter is None:
        _cleanup(ctx, plan, config)
        return JobOutcome("cancelled", error=GONE)
    _cleanup(ctx, plan, config, keep_previews=True)
    kohya = adapter.path.rsplit("/", 1)[0] + "/" + result.kohya_path.name if result.kohya_path else None
    return JobOutcome("succeeded", result={
        "adapter_id": adapter.id, "version": adapter.version, "final_loss": result.final_loss,
        "steps": result.steps_done, "metrics": None, "plot_path": None, "preview_path": hooks.last_preview,
        "kohya_path": kohya, "class_images_generated": reply.get("class_images_generated", 0),
        "node": reply.get("node"), "resumed_from": reply.get("resumed_from"),
    })


def _keep_class_images(ctx: JobContext, shipped: dict[str, bytes]) -> None:
    """Class images a node generated join this host's cache, so the next node gets them instead of remaking."""
    cache = FileStore(ctx.settings.cache_dir / "class_images")
    for rel, data in shipped.items():
        try:
            cache.write_bytes(rel, data)  # atomic; the store refuses a path that leaves its root
        except UnsafePathError:
            log.warning("ignoring a class image outside the cache: %r", rel)


def _cleanup(ctx: JobContext, plan: TrainingPlan, config, keep_previews: bool = False) -> None:
    shutil.rmtree(config.output_dir.parent, ignore_errors=True)
    root = files.job_root(plan.user_id, ctx.job.id)
    ctx.store.delete(root + "/checkpoints")
    if not keep_previews:
        ctx.store.delete(root)
