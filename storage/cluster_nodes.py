"""The cluster's nodes as the dispatcher last saw them, in `data_dir/cluster-nodes.json` (cluster mode only).

The dispatcher writes it (atomically) whenever a node joins or leaves; the bot reads it for /admin queue without
importing Ray.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from storage.files import atomic_path

log = logging.getLogger(__name__)

NODES_FILE = "cluster-nodes.json"


@dataclass(frozen=True)
class ClusterNode:
    label: str  # host/node-id prefix, as /status shows it
    gpus: float


@dataclass(frozen=True)
class NodeChange:
    at: float
    event: str  # joined, left
    node: str
    gpus: float


@dataclass(frozen=True)
class ClusterNodes:
    nodes: tuple[ClusterNode, ...]
    changes: tuple[NodeChange, ...]  # oldest first
    updated_at: float


def write_cluster_nodes(data_dir: Path, nodes: list[ClusterNode], changes: list[NodeChange]) -> None:
    document = {"updated_at": time.time(), "nodes": [asdict(n) for n in nodes],
                "changes": [asdict(c) for c in changes]}
    with atomic_path(Path(data_dir) / NODES_FILE) as staging:
        staging.write_text(json.dumps(document, indent=1))


def read_cluster_nodes(data_dir: Path) -> ClusterNodes | None:
    """None when no dispatcher has written the file (local mode) or it cannot be read."""
    path = Path(data_dir) / NODES_FILE
    try:
        document = json.loads(path.read_text())
        return ClusterNodes(
            nodes=tuple(ClusterNode(**n) for n in document["nodes"]),
            changes=tuple(NodeChange(**c) for c in document["changes"]),
            updated_at=float(document["updated_at"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("could not read %s: %s", path, error)
        return None
