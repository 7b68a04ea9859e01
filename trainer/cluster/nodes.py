"""Which Ray nodes are in the cluster: joins and leaves are logged and written for the admins' /admin queue.

The dispatcher polls Ray's node table and writes `data_dir/cluster-nodes.json` (atomically) on every change; the
bot reads that file without importing Ray (bot.services.cluster_nodes).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray

from storage.files import atomic_path

log = logging.getLogger(__name__)

NODES_FILE = "cluster-nodes.json"
KEEP_EVENTS = 20


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    label: str  # host/node-id prefix, as /status shows it
    gpus: float


def alive_nodes(gpu_resource: str) -> dict[str, NodeInfo]:
    found = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        node_id = node["NodeID"]
        label = f"{node.get('NodeManagerHostname', '?')}/{node_id[:8]}"
        found[node_id] = NodeInfo(node_id, label, float(node.get("Resources", {}).get(gpu_resource, 0)))
    return found


class NodeWatcher:
    """Polls the node table every `interval_s`; logs each join and leave and keeps the nodes file current."""

    def __init__(self, gpu_resource: str, data_dir: Path, interval_s: float = 2.0) -> None:
        self.gpu_resource = gpu_resource
        self.path = Path(data_dir) / NODES_FILE
        self.interval_s = interval_s
        self.nodes: dict[str, NodeInfo] = {}
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[dict[str, Any]]:
        """One poll; returns the join/leave events it found."""
        current = alive_nodes(self.gpu_resource)
        now = time.time()
        found = [{"at": now, "event": "joined", "node": info.label, "gpus": info.gpus}
                 for node_id, info in current.items() if node_id not in self.nodes]
        found += [{"at": now, "event": "left", "node": info.label, "gpus": info.gpus}
                  for node_id, info in self.nodes.items() if node_id not in current]
        for event in found:
            log.warning("cluster node %s %s (%g GPU)", event["node"], event["event"], event["gpus"])
        self.nodes = current
        if found or not self.path.exists():
            self.events = (self.events + found)[-KEEP_EVENTS:]
            self._write()
        return found

    def _write(self) -> None:
        document = {"updated_at": time.time(), "nodes": [asdict(n) for n in self.nodes.values()],
                    "events": self.events}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as staging:
            staging.write_text(json.dumps(document, indent=1))

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
