"""Cluster mode on a simulated Ray cluster (tiny-sd15 on CPU; each node 1 CPU and one unit of a custom resource
standing in for its GPU), with the real dispatcher, training actors and Serve replicas.

    python -m bench.cluster --json [--quick]

- scale_ratio: mixed training and generation jobs finished per minute with 2 worker nodes, divided by the same
  workload with 1 node, measured one after the other in this run (node 2 joins between the two).
- affinity_hit_rate: of the repeated requests for an adapter (sequential, both replicas up), the share that land on
  a replica that already served it.
- failover_s: seconds from removing the node that runs a training job to that job's first training step on
  another node (resumed from its last shipped checkpoint).
- lost_jobs: jobs enqueued by this bench that did not succeed (must be 0).
- db_writes_per_s: bot-side SQLite write throughput at saturation: job progress heartbeats (the dominant write of
  a running job) from 4 threads with their own connections, as fast as they go, for a few seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import ray
from ray import serve
from ray.cluster_utils import Cluster

import trainer.cluster.training as cluster_training
from bench.sample_photos import two_face_jpegs
from intake.captions import template_caption
from intake.photos import IntakeRules, inspect_batch
from intake.triggers import trigger_skeleton
from storage import files, generations, jobs, photos, subjects
from storage.db import connect
from storage.files import FileStore
from storage.settings import Settings
from trainer.cluster.dispatcher import Dispatcher
from trainer.cluster.replica import APPLICATION, DEPLOYMENT

GPU = "likeness_gpu"
IMAGINE = {"width": 64, "height": 64, "steps": 4, "guidance": 5.0, "scheduler": "euler", "count": 1, "style": None,
           "strength": None, "source_index": None, "scale": None, "headshot_prompts": None, "greeting": None,
           "layout": None, "aspect": "square"}


class Bench:
    def __init__(self, root: Path, quick: bool) -> None:
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        self.nodes = [self.add_node()]
        self.settings = Settings(
            data_dir=root / "data", model_family="tiny-sd15", device="cpu", worker_poll_s=0.05,
            cluster_address=self.cluster.address, cluster_gpu_resource=GPU, cluster_replicas=2,
            cluster_train_slots=2, cluster_scratch_dir=str(root / "scratch"),
        )
        self.conn = connect(self.settings.database_path)
        self.store = FileStore(self.settings.store_dir)
        self.steps = 8 if quick else 24
        self.enqueued: list[int] = []
        self.progress: list[tuple[float, int, str | None]] = []  # (time, job id, node) of each training step seen
        self.dispatcher = Dispatcher(self.settings, owner="bench-dispatcher")

    def add_node(self):
        node = self.cluster.add_node(num_cpus=1, resources={GPU: 1})
        self.cluster.wait_for_nodes()
        return node

    def start(self) -> None:
        record = cluster_training.apply_events

        def recording(ctx, hooks, events):  # notes when each training step arrives, and from which node
            if any(e.kind == "progress" and e.progress.loss is not None for e in events):
                self.progress.append((time.monotonic(), ctx.job.id, jobs.get_job(ctx.conn, ctx.job.id).node))
            return record(ctx, hooks, events)

        cluster_training.apply_events = recording
        self.dispatcher.start()

    def close(self) -> None:
        self.dispatcher.request_stop()
        self.dispatcher.join(60)
        serve.shutdown()
        ray.shutdown()
        self.cluster.shutdown()

    # Work.
    def subject(self, user_id: int, trigger: str):
        subjects.ensure_user(self.conn, user_id, f"user{user_id}")
        subject = subjects.create_subject(self.conn, owner_id=user_id, trigger=trigger,
                                          trigger_key=trigger_skeleton(trigger), class_noun="person",
                                          display_name=trigger, family="tiny-sd15")
        for result in inspect_batch(two_face_jpegs(), IntakeRules.for_family("tiny-sd15")):
            prepared = result.prepared
            if prepared is None:  # a rejected demo photo: train on the others
                continue
            original = files.photo_original_key(user_id, subject.id, prepared.sha256, prepared.original_ext)
            crop = files.photo_crop_key(user_id, subject.id, prepared.sha256)
            self.store.write_bytes(original, prepared.original)
            self.store.write_bytes(crop, prepared.crop)
            photos.add_accepted_photo(
                self.conn, subject.id, original_name=result.verdict.filename, sha256=prepared.sha256,
                phash=prepared.phash, original_path=original, crop_path=crop, size_bytes=len(prepared.original),
                width=prepared.width, height=prepared.height, face_box=prepared.face_box,
                caption=template_caption(trigger, "person"),
            )
        return subject

    def train(self, subject, **overrides) -> int:
        payload = {"subject_ids": [subject.id], "family": "tiny-sd15", "base_model": "tiny-sd15",
                   "overrides": {"steps": self.steps, "num_class_images": 2, "checkpoint_every": 4,
                                 "preview_every": 0, **overrides}}
        job_id = jobs.enqueue_job(self.conn, "train", payload, user_id=subject.owner_id)
        self.enqueued.append(job_id)
        return job_id

    def imagine(self, user_id: int, prompt: str, people=()) -> int:
        entries = [{"kind": "subject", "subject_id": s.id, "adapter_id": a, "trigger": s.trigger, "weight": 1.0}
                   for s, a in people]
        gen_id = generations.create_generation(
            self.conn, user_id=user_id, kind="imagine", prompt=prompt, negative_prompt="", seed=len(self.enqueued),
            params=IMAGINE, adapters=entries, subject_ids=[s.id for s, _ in people])
        job_id = jobs.enqueue_job(self.conn, "generate", {"generation_id": gen_id}, user_id=user_id)
        generations.attach_job(self.conn, gen_id, job_id)
        self.enqueued.append(job_id)
        return job_id

    def wait(self, job_ids: list[int], until=None, deadline_s: float = 1800) -> list[jobs.Job]:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            found = [jobs.get_job(self.conn, job_id) for job_id in job_ids]
            if all((until(job) if until else job.finished) for job in found):
                return found
            time.sleep(0.1)
        raise TimeoutError(f"jobs {job_ids} did not finish in {deadline_s:.0f}s")

    def wait_for_replicas(self, count: int) -> None:
        while serve.status().applications[APPLICATION].deployments[DEPLOYMENT].replica_states.get("RUNNING") != count:
            time.sleep(0.2)


def mixed_workload(bench: Bench, people: list, generations_count: int) -> float:
    """Train each subject and make pictures alongside; returns jobs finished per minute."""
    began = time.monotonic()
    job_ids = [bench.train(subject) for subject in people]
    job_ids += [bench.imagine(people[0].owner_id, f"a lighthouse, take {i}") for i in range(generations_count)]
    bench.wait(job_ids)
    return len(job_ids) / ((time.monotonic() - began) / 60)


def affinity_hit_rate(bench: Bench, people: list, requests: int) -> float:
    """Requests for adapters in a shuffled order, one at a time; a repeat hits when its replica served it."""
    served: dict[str, list[int]] = {}
    order = [people[i % len(people)] for i in range(requests)]
    random.Random(7).shuffle(order)
    seen, repeats, hits = set(), 0, 0
    for subject, adapter_id in order:
        job = bench.wait([bench.imagine(subject.owner_id, f"{subject.trigger} person", [(subject, adapter_id)])])[0]
        replica = job.result["replica"]
        if adapter_id in seen:
            repeats += 1
            hits += adapter_id in served.get(replica, [])[-bench.settings.adapter_cache_size:]
        seen.add(adapter_id)
        served.setdefault(replica, []).append(adapter_id)
    return hits / repeats if repeats else 0.0


def failover_seconds(bench: Bench, subject) -> float:
    job_id = bench.train(subject, steps=bench.steps * 2)
    checkpoints = files.job_root(subject.owner_id, job_id) + "/checkpoints"
    job = bench.wait([job_id], until=lambda j: j.finished or (
        j.node is not None and bench.store.exists(checkpoints) and bool(bench.store.list_files(checkpoints))))[0]
    if job.finished:
        raise RuntimeError("the training finished before its node could be removed; use more steps")
    node = next(n for n in bench.nodes if n.node_id.startswith(job.node.rsplit("/", 1)[1]))
    killed_at = time.monotonic()
    bench.cluster.remove_node(node, allow_graceful=False)
    bench.wait([job_id])
    resumed = [t for t, seen_job, seen_node in bench.progress
               if seen_job == job_id and t > killed_at and seen_node not in (None, job.node)]
    return round(resumed[0] - killed_at, 2) if resumed else float("nan")


def db_writes_per_s(path: Path, seconds: float = 3.0, threads: int = 4) -> float:
    conn = connect(path)
    job_ids = []
    for index in range(threads):
        jobs.enqueue_job(conn, "train", {"bench": index})
        job_ids.append(jobs.claim_next_job(conn, f"owner-{index}", 60.0).id)
    counts = [0] * threads
    end = time.monotonic() + seconds

    def beat(index: int) -> None:
        own = connect(path, apply_migrations=False)
        while time.monotonic() < end:
            jobs.heartbeat(own, job_ids[index], f"owner-{index}", 60.0, step=counts[index], message="Training step")
            counts[index] += 1
        own.close()

    began = time.monotonic()
    workers = [threading.Thread(target=beat, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return round(sum(counts) / (time.monotonic() - began), 1)


def run(root: Path, quick: bool) -> dict:
    writes = db_writes_per_s(root / "writes.sqlite3")
    bench = Bench(root, quick)
    try:
        bench.start()
        people = [bench.subject(user_id, trigger) for user_id, trigger in ((1, "rraj"), (2, "mmoe"), (3, "ttia"),
                                                                           (4, "kkal"))]
        bench.wait([bench.imagine(1, "warm-up")])
        one_node = mixed_workload(bench, people[:2], 4 if quick else 8)
        bench.nodes.append(bench.add_node())
        bench.wait_for_replicas(2)
        two_nodes = mixed_workload(bench, people[2:], 4 if quick else 8)
        trained = [(s, jobs.get_job(bench.conn, j).result["adapter_id"]) for s, j in
                   zip(people, [j for j in bench.enqueued if jobs.get_job(bench.conn, j).kind == "train"])]
        hit_rate = affinity_hit_rate(bench, trained, 8 if quick else 16)
        failover = failover_seconds(bench, people[0])
        lost = sum(jobs.get_job(bench.conn, j).state != "succeeded" for j in bench.enqueued)
    finally:
        bench.close()
    return {"scale_ratio": round(two_nodes / one_node, 2), "jobs_per_min_1_node": round(one_node, 2),
            "jobs_per_min_2_nodes": round(two_nodes, 2), "affinity_hit_rate": round(hit_rate, 2),
            "failover_s": failover, "lost_jobs": lost, "db_writes_per_s": writes, "training_steps": bench.steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer steps and requests (a smoke run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="likeness-bench-cluster-") as folder:
        result = run(Path(folder), args.quick)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name}: {value}")
    return 0 if result["lost_jobs"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
