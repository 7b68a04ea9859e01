"""The dispatcher: claims jobs from the queue on the bot host and runs them on the Ray cluster.

It is the local worker's loop (trainer.worker.Worker: claim, lease, heartbeat, record) run by several slots at
once, one thread each, all under one lease owner so the supervisor can requeue them together if this process
dies. Training slots each follow one training actor; generation slots each keep one request in flight on the
Serve deployment, so pictures never wait behind a training run. Only this process writes SQLite and the store.
"""

from __future__ import annotations

import logging
import threading

import ray

from storage import jobs
from storage.db import connect
from storage.settings import Settings
from trainer.cluster.generation import GATEWAY_RESOURCE, GenerationGateway, run_remote_generation
from trainer.cluster.nodes import NodeWatcher
from trainer.cluster.replica import start_generation_service
from trainer.cluster.training import run_remote_training
from trainer.job_api import JobContext, JobOutcome
from trainer.worker import Worker

log = logging.getLogger(__name__)

TRAIN_KINDS = ("train", "class_images")
GENERATE_KINDS = ("generate",)
REQUEUE_INTERVAL_S = 5.0


def class_images_on_the_node(ctx: JobContext) -> JobOutcome:
    """Cluster mode makes class images on the training node (and keeps them here for the next job)."""
    return JobOutcome("succeeded", result={"count": 0, "generated": 0, "deferred_to_training_node": True})


HANDLERS = {"train": run_remote_training, "generate": run_remote_generation, "class_images": class_images_on_the_node}


class DispatchSlot(Worker):
    """A worker loop whose jobs run elsewhere: there is no local GPU to yield, and nothing to serve between steps.
    Expired leases are requeued by the dispatcher once for all slots, not by every slot on every poll."""

    def should_yield_gpu(self) -> bool:
        return False

    def serve_waiting_generations(self) -> int:
        return 0

    def run_next(self, kinds: tuple[str, ...] = jobs.KINDS) -> bool:
        job = jobs.claim_next_job(self.conn, self.owner, self.settings.worker_lease_s, kinds)
        if job is None:
            return False
        self.run_job(job)
        return True


def join_cluster(settings: Settings) -> None:
    """Join the cluster as a driver. Nothing from this process's environment is sent along (no token)."""
    if not ray.is_initialized():
        ray.init(address=settings.cluster_address, namespace="likeness", log_to_driver=False,
                 runtime_env={"env_vars": {}})


class Dispatcher:
    def __init__(self, settings: Settings, owner: str) -> None:
        self.settings = settings
        self.owner = owner
        self.gateway: GenerationGateway | None = None
        self.watcher = NodeWatcher(settings.cluster_gpu_resource, settings.data_dir)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._slots: list[DispatchSlot] = []
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        join_cluster(self.settings)
        self.watcher.start()
        self.gateway = GenerationGateway(start_generation_service(self.settings))
        plan = [("train", TRAIN_KINDS)] * self.settings.cluster_train_slots
        plan += [("generate", GENERATE_KINDS)] * (2 * self.settings.cluster_replicas)
        for index, (name, kinds) in enumerate(plan):
            thread = threading.Thread(target=self._slot_loop, args=(kinds,), name=f"{name}-slot-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("dispatcher %s: %d training and %d generation slots on %s", self.owner,
                 self.settings.cluster_train_slots, 2 * self.settings.cluster_replicas, self.settings.cluster_address)

    def _slot_loop(self, kinds: tuple[str, ...]) -> None:
        slot = DispatchSlot(self.settings, HANDLERS, owner=self.owner, idle_tasks=())
        slot.exclusive_gpu = False
        slot.resources[GATEWAY_RESOURCE] = self.gateway
        with self._lock:
            self._slots.append(slot)
            if self.stopping:
                slot.request_stop()
        try:
            while not slot.stopping:
                try:
                    ran = slot.run_next(kinds)
                except Exception:  # a locked database or a lost cluster connection: retry, never die silently
                    log.exception("dispatch slot failed; retrying")
                    ran = False
                if not ran:
                    self._stop.wait(self.settings.worker_poll_s)
        finally:
            slot.resources.clear()  # the gateway is shared; Serve outlives this slot
            slot.close()

    def request_stop(self) -> None:
        """Running jobs checkpoint on their nodes and go back to the queue; the threads then end."""
        self._stop.set()
        with self._lock:
            for slot in self._slots:
                slot.request_stop()

    def join(self, timeout_s: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout_s)
        self.watcher.stop()

    def leave_cluster(self) -> None:
        """Disconnect this driver, so the cluster frees its objects at once (Serve keeps the replicas running)."""
        ray.shutdown()

    def run_until_stopped(self) -> None:
        """Requeue jobs whose lease ran out (every few seconds) until stopped, then wait for the slots."""
        conn = connect(self.settings.database_path)
        try:
            while not self._stop.wait(REQUEUE_INTERVAL_S):
                try:
                    requeued, failed = jobs.requeue_expired(conn)
                except Exception:  # a locked database: next time
                    log.exception("could not requeue expired jobs")
                    continue
                if requeued or failed:
                    log.info("requeued %s, gave up %s after expired leases", requeued, failed)
        finally:
            conn.close()
        self.join()

