"""A simulated Ray cluster for the cluster-mode tests: a head with no GPU and two 1-CPU nodes, each with one
unit of a custom resource standing in for its GPU. One cluster and one dispatcher serve the whole test module."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import ray
from ray import serve
from ray.cluster_utils import Cluster

from storage import generations, jobs
from storage.db import connect
from storage.files import FileStore
from storage.settings import Settings
from trainer.cluster.dispatcher import Dispatcher

GPU = "likeness_gpu"
TOKEN = "cluster-test-token-never-leaves-the-bot-host"
TRAIN = {"steps": 24, "num_class_images": 2, "checkpoint_every": 4, "preview_every": 12}


@dataclass
class ClusterWorld:
    cluster: Cluster
    gpu_nodes: list
    settings: Settings
    conn: object
    store: FileStore
    dispatcher: Dispatcher | None = None
    next_seed: int = 1
    notes: dict = field(default_factory=dict)

    def node_for(self, label: str):
        """The simulated node whose Ray node id begins like the label's suffix."""
        prefix = label.rsplit("/", 1)[1]
        return next(node for node in self.gpu_nodes if node.node_id.startswith(prefix))


def start_cluster() -> tuple[Cluster, list]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1, resources={GPU: 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    return cluster, nodes


def make_cluster_world(data_dir, cluster: Cluster, nodes: list) -> ClusterWorld:
    settings = Settings(
        data_dir=data_dir, model_family="tiny-sd15", device="cpu", worker_poll_s=0.05, worker_lease_s=30.0,
        cluster_address=cluster.address, cluster_gpu_resource=GPU, cluster_replicas=2, cluster_train_slots=2,
        cluster_scratch_dir=str(data_dir / "node-scratch"), discord_token=TOKEN,
    )
    return ClusterWorld(cluster, nodes, settings, connect(settings.database_path), FileStore(settings.store_dir))


def shutdown(world: ClusterWorld) -> None:
    if world.dispatcher is not None:
        world.dispatcher.request_stop()
        world.dispatcher.join(60)
    serve.shutdown()
    ray.shutdown()
    world.cluster.shutdown()


def start_dispatcher(world: ClusterWorld) -> Dispatcher:
    """The bot host's dispatcher, in this process, with the token in its environment as on a real bot host."""
    os.environ["LIKENESS_DISCORD_TOKEN"] = TOKEN  # set after the nodes started: only sending could leak it
    world.dispatcher = Dispatcher(world.settings, owner="dispatcher-test")
    world.dispatcher.start()
    return world.dispatcher


def wait_for_job(conn, job_id: int, deadline_s: float = 240.0, until=None) -> jobs.Job:
    """Poll the job row until it is finished (or `until(job)` holds); fail with its state after the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        job = jobs.get_job(conn, job_id)
        if (until(job) if until else job.finished):
            return job
        if time.monotonic() > end:
            raise AssertionError(f"job {job_id} still {job.state} at step {job.step}: {job.message}")
        time.sleep(0.1)


def enqueue_training(world: ClusterWorld, subject_ids: list[int], user_id: int, **overrides) -> int:
    payload = {"subject_ids": subject_ids, "family": "tiny-sd15", "base_model": "tiny-sd15",
               "overrides": {**TRAIN, **overrides}}
    return jobs.enqueue_job(world.conn, "train", payload, user_id=user_id)


def enqueue_imagine(world: ClusterWorld, user_id: int, prompt: str, people, **params) -> tuple[int, int]:
    base = {"width": 64, "height": 64, "steps": 2, "guidance": 5.0, "scheduler": "euler", "count": 1,
            "style": None, "strength": None, "source_index": None, "scale": None, "headshot_prompts": None,
            "greeting": None, "layout": None, "aspect": "square", **params}
    entries = [{"kind": "subject", "subject_id": s.id, "adapter_id": a.id, "trigger": s.trigger, "weight": 1.0}
               for s, a in people]
    gen_id = generations.create_generation(
        world.conn, user_id=user_id, kind="imagine", prompt=prompt, negative_prompt="", seed=7, params=base,
        adapters=entries, subject_ids=[s.id for s, _ in people],
    )
    job_id = jobs.enqueue_job(world.conn, "generate", {"generation_id": gen_id}, user_id=user_id)
    generations.attach_job(world.conn, gen_id, job_id)
    return gen_id, job_id
