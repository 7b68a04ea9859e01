"""Generation on the cluster: a Ray Serve deployment whose replicas each keep one resident base pipeline.

Routing is Ray Serve's model multiplexing: the dispatcher names the request's adapter set as its multiplexed model
id, and Serve sends it to a replica that already has that set loaded (its own LRU of `adapter_cache_size` sets).
The adapters themselves live in the replica's GenerationServer (trainer.serving), the same code local mode uses.
A replica has no database and no store: the request carries the adapter files (as references into Ray's object
store, fetched only by a replica that lacks them) and any input picture.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray import serve

from storage.files import FileStore, atomic_path
from storage.settings import Settings
from trainer.cluster.training_node import environment_report, node_label
from trainer.serving.adapter_cache import AdapterFileError, AdapterSource
from trainer.serving.kinds import RenderedImage, Renderer, RenderProgress, RenderStopped, estimated_steps
from trainer.serving.requests import RenderPlan
from trainer.serving.server import GenerationServer
from trainer.training.memory import is_out_of_memory

log = logging.getLogger(__name__)

DEPLOYMENT = "likeness-generation"
APPLICATION = "likeness"


@dataclass(frozen=True)
class GenerationRequest:
    plan: RenderPlan  # adapter paths are the bot host's; the replica rewrites them to its own copies
    adapter_files: dict[str, Any]  # AdapterSource.key -> ObjectRef of the LoRA file, fetched only when missing here
    source_picture: bytes | None = None  # variations and upscales: the parent picture (store key plan.source_key)


@dataclass
class GenerationReply:
    images: list[RenderedImage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # damaged, out_of_memory, model_unavailable, withheld, stopped
    replica: str = ""
    node: str = ""


def adapter_set_id(plan: RenderPlan) -> str:
    """The multiplexed model id: which adapters (by content key) the picture needs; 'base' for none."""
    keys = sorted({person.source.key for person in plan.people} | {style.source.key for style in plan.styles})
    return "+".join(keys) or "base"


def plan_sources(plan: RenderPlan) -> list[AdapterSource]:
    return [person.source for person in plan.people] + [style.source for style in plan.styles]


class GenerationReplica:
    def __init__(self, settings_data: dict[str, Any]) -> None:
        self.settings = Settings(**settings_data)
        self.server = GenerationServer(self.settings)
        self.scratch = Path(tempfile.mkdtemp(prefix="likeness-replica-"))
        self.store = FileStore(self.scratch / "store")
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")  # one pipeline, one render
        self.replica = serve.get_replica_context().replica_id.unique_id
        try:  # loaded now, so a replica counts as ready only once it can render
            self.server.runtime(self.settings.model_family)
        except (OSError, ValueError) as error:  # reported per request, as in local mode
            log.error("could not load the %s base model: %s", self.settings.model_family, error)

        async def load_adapter_set(model_id: str) -> str:
            return model_id  # the weights load on first use, into the server's own LRU

        self.adapter_set = serve.multiplexed(max_num_models_per_replica=self.settings.adapter_cache_size)(
            load_adapter_set)

    def environment(self) -> dict[str, Any]:
        return {**environment_report(), "replica": self.replica, "has_settings_token": self.settings.discord_token
                is not None}

    async def render(self, request: GenerationRequest) -> GenerationReply:
        await self.adapter_set(serve.get_multiplexed_model_id())
        stop = threading.Event()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._render, request, stop)
        except asyncio.CancelledError:
            stop.set()  # the render thread stops at its next denoising step
            raise

    def _render(self, request: GenerationRequest, stop: threading.Event) -> GenerationReply:
        reply = GenerationReply(replica=self.replica, node=node_label())
        plan = self._localize(request)
        if stop.is_set():
            reply.error = "stopped"
            return reply
        try:
            runtime = self.server.runtime(plan.family)
        except (OSError, ValueError) as error:
            log.error("could not load the %s base model: %s", plan.family, error)
            reply.error = "model_unavailable"
            return reply
        progress = RenderProgress(lambda **_: None, lambda: "cancel" if stop.is_set() else None,
                                  estimated_steps(plan))
        try:
            rendered = Renderer(plan, runtime, progress, self.store, self.server.model_label(plan.family),
                                self.server.model_hash(plan.family)).render()
        except RenderStopped:
            reply.error = "stopped"
            return reply
        except AdapterFileError as error:
            log.warning("generation %d: %s", plan.generation_id, error)
            reply.error = "damaged"
            return reply
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            reply.error = "out_of_memory"
        if reply.error:  # outside the except block, so the traceback's tensors can be freed
            self.server.free_memory()
            return reply
        reply.images, reply.warnings = rendered.images, rendered.warnings
        self._safety_filter(reply)
        return reply

    def _localize(self, request: GenerationRequest) -> RenderPlan:
        """Write the shipped files here and point the plan at them (same keys, so the cache sees the same set)."""
        local = {}
        for source in plan_sources(request.plan):
            path = self.scratch / "adapters" / source.key / Path(source.path).name
            if not path.is_file():
                with atomic_path(path) as staging:
                    staging.write_bytes(ray.get(request.adapter_files[source.key]))
            local[source.key] = replace(source, path=path)
        if request.source_picture is not None and request.plan.source_key:
            self.store.write_bytes(request.plan.source_key, request.source_picture)
        plan = request.plan
        return replace(plan, people=tuple(replace(p, source=local[p.source.key]) for p in plan.people),
                       styles=tuple(replace(s, source=local[s.source.key]) for s in plan.styles))

    def _safety_filter(self, reply: GenerationReply) -> None:
        nsfw = self.server.nsfw_filter
        if nsfw is None:
            return
        flags = nsfw.flags([item.image for item in reply.images])
        kept = [item for item, flagged in zip(reply.images, flags) if not flagged]
        if not kept:
            reply.images, reply.error = [], "withheld"
        elif len(kept) < len(reply.images):
            reply.warnings.append(f"{len(reply.images) - len(kept)} of the pictures were withheld by the safety filter.")
            reply.images = kept


def replica_options(settings: Settings) -> dict[str, Any]:
    share, resource = settings.cluster_replica_gpu, settings.cluster_gpu_resource
    options: dict[str, Any] = {"num_cpus": 0}
    if resource == "GPU":
        options["num_gpus"] = share
    else:
        options["resources"] = {resource: share}
    return options


def start_generation_service(settings: Settings):
    """Deploy the replicas (at most one per node) and return the handle the dispatcher sends requests to."""
    serve.start(proxy_location="Disabled")
    deployment = serve.deployment(GenerationReplica).options(
        name=DEPLOYMENT, num_replicas=settings.cluster_replicas, max_replicas_per_node=1,
        ray_actor_options=replica_options(settings), max_ongoing_requests=4,
    )
    data = settings.model_dump(exclude={"discord_token"})  # never the secret
    # Not waiting for every replica: with fewer nodes than replicas, requests go to those that are up.
    target = serve.RunTarget(deployment.bind(data), name=APPLICATION, route_prefix=None)
    return serve.run_many([target], wait_for_applications_running=False)[0]
