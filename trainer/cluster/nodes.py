"""Which Ray nodes are in the cluster: each join and leave is logged and written for the admins' /admin queue
(storage.cluster_nodes, which the bot reads without importing Ray)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import ray

from storage.cluster_nodes import ClusterNode, NodeChange, write_cluster_nodes

log = logging.getLogger(__name__)

KEEP_CHANGES = 20


def alive_nodes(gpu_resource: str) -> dict[str, ClusterNode]:
    """Ray node id -> the node, for every live node."""
    found = {}
    for node in ray.nodes():
        if node.get("Alive"):
            node_id = node["NodeID"]
            label = f"{node.get('NodeManagerHostname', '?')}/{node_id[:8]}"
            found[node_id] = ClusterNode(label, float(node.get("Resources", {}).get(gpu_resource, 0)))
    return found


class NodeWatcher:
    """Polls the node table every `interval_s`; logs each join and leave and keeps the nodes file current."""

    def __init__(self, gpu_resource: str, data_dir: Path, interval_s: float = 2.0, read_nodes=alive_nodes) -> None:
        self.gpu_resource = gpu_resource
        self.data_dir = Path(data_dir)
        self.interval_s = interval_s
        self.read_nodes = read_nodes
        self.nodes: dict[str, ClusterNode] = {}
        self.changes: list[NodeChange] = []
        self._checked = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[NodeChange]:
        """One poll; returns the joins and leaves it found."""
        current = self.read_nodes(self.gpu_resource)
        now = time.time()
        found = [NodeChange(now, "joined", n.label, n.gpus) for i, n in current.items() if i not in self.nodes]
        found += [NodeChange(now, "left", n.label, n.gpus) for i, n in self.nodes.items() if i not in current]
        for change in found:
            log.warning("cluster node %s %s (%g GPU)", change.node, change.event, change.gpus)
        self.nodes = current
        if found or not self._checked:
            self.changes = (self.changes + found)[-KEEP_CHANGES:]
            write_cluster_nodes(self.data_dir, list(current.values()), self.changes)
        self._checked = True
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # a GCS hiccup must not end the watcher
                log.exception("could not read the cluster's nodes")

    def start(self) -> None:
        self.check()
        self._thread = threading.Thread(target=self._run, name="node-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
