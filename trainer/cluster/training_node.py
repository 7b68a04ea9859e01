"""The training actor: one job's `train_adapter` on a Ray node, with everything coming back as events.

A node has no database and no file store. The dispatcher ships the photos, the cached class images and the job's
last checkpoints in (`TrainingShipment`). Progress, previews and each checkpoint come back through `poll` as soon as
they are made; the adapter files come back as `train`'s return value. `stop` is read before every training step, so
cancel, forget and shutdown reach the node within one step.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from trainer.training.checkpoints import list_checkpoints
from trainer.training.config import TrainConfig
from trainer.training.loop import TrainProgress
from trainer.training.run import TrainingError, train_adapter

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"


@dataclass(frozen=True)
class TrainingShipment:
    """Everything a node needs for one job; every path in `config` points into `scratch` on the node."""

    job_id: int
    config: TrainConfig
    scratch: str
    photos: dict[str, bytes]  # node path of each photo -> its bytes
    class_images: dict[str, bytes] = field(default_factory=dict)  # path under config.class_cache_dir -> bytes
    checkpoints: dict[int, bytes] = field(default_factory=dict)  # step -> state.pt, the newest kept in the store


@dataclass(frozen=True)
class NodeEvent:
    kind: str  # progress, preview, checkpoint
    step: int
    progress: TrainProgress | None = None
    images: dict[str, Any] | None = None  # preview: label -> PIL image
    data: bytes | None = None  # checkpoint: state.pt


def node_label() -> str:
    """How a node is named in /status and the logs: host name and the start of its Ray node id."""
    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def environment_report() -> dict[str, Any]:
    """What the process environment holds of Likeness's settings (names only), to prove no secret is here."""
    names = sorted(name for name in os.environ if name.startswith("LIKENESS_"))
    return {"node": node_label(), "likeness_variables": names,
            "has_token": bool(os.environ.get("LIKENESS_DISCORD_TOKEN"))}


class TrainingNode:
    """Runs as a threaded Ray actor (max_concurrency > 1), so `poll` and `stop` answer while `train` runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[NodeEvent] = []
        self._stop_reason: str | None = None
        self._shipped_step = 0
        self._config: TrainConfig | None = None

    def where(self) -> str:
        return node_label()

    def environment(self) -> dict[str, Any]:
        return environment_report()

    def stop(self, reason: str) -> None:
        with self._lock:
            self._stop_reason = self._stop_reason or reason

    def poll(self) -> list[NodeEvent]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def train(self, shipment: TrainingShipment) -> dict[str, Any]:
        """Train (resuming from the shipped checkpoint); returns the adapter files or the reason it stopped."""
        config = self._config = shipment.config
        resumed_from = unpack(shipment)
        self._shipped_step = resumed_from or 0
        log.info("job %d: training on %s%s", shipment.job_id, node_label(),
                 f", resuming from step {resumed_from}" if resumed_from else "")
        before = set(_relative_files(config.class_cache_dir))
        try:
            result = train_adapter(config, _NodeHooks(self))
        except TrainingError as error:
            return {"error": f"{error.message} {error.suggestion}".strip()}
        self.ship_new_checkpoints()
        reply = {"stopped": result.stopped, "steps_done": result.steps_done, "final_loss": result.final_loss,
                 "metadata": result.metadata, "resumed_from": resumed_from, "node": node_label(),
                 "class_images_generated": result.class_images_generated,
                 "class_images": {rel: (config.class_cache_dir / rel).read_bytes()
                                  for rel in _relative_files(config.class_cache_dir) if rel not in before}}
        if result.adapter_path is not None:
            reply["adapter_name"] = result.adapter_path.name
            reply["kohya_name"] = result.kohya_path.name if result.kohya_path else None
            reply["files"] = {p.name: p.read_bytes() for p in config.output_dir.iterdir() if p.is_file()}
        shutil.rmtree(shipment.scratch, ignore_errors=True)
        return reply

    # Called from the training loop (through _NodeHooks).
    def emit(self, event: NodeEvent) -> None:
        with self._lock:
            if event.kind == "progress" and self._events and self._events[-1].kind == "progress":
                self._events[-1] = event  # only the latest progress matters
            else:
                self._events.append(event)

    def stop_reason(self) -> str | None:
        with self._lock:
            return self._stop_reason

    def ship_new_checkpoints(self) -> None:
        """Queue every checkpoint written since the last one shipped (the loop writes them atomically)."""
        for step, folder in list_checkpoints(self._config.checkpoint_dir):
            if step > self._shipped_step:
                self.emit(NodeEvent("checkpoint", step, data=(folder / CHECKPOINT_FILE).read_bytes()))
                self._shipped_step = step


class _NodeHooks:
    def __init__(self, node: TrainingNode) -> None:
        self.node = node

    def progress(self, p: TrainProgress) -> None:
        self.node.emit(NodeEvent("progress", p.step, progress=p))

    def preview(self, step: int, images: dict[str, Any]) -> None:
        self.node.emit(NodeEvent("preview", step, images=dict(images)))

    def should_stop(self) -> str | None:
        return self.node.stop_reason()

    def between_steps(self) -> None:
        self.node.ship_new_checkpoints()


def unpack(shipment: TrainingShipment) -> int | None:
    """Write the shipment into a fresh scratch folder; returns the newest shipped checkpoint step, if any."""
    config = shipment.config
    scratch = Path(shipment.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    for path, data in shipment.photos.items():
        _write(Path(path), data)
    for rel, data in shipment.class_images.items():
        _write(config.class_cache_dir / rel, data)
    for step, data in shipment.checkpoints.items():
        _write(config.checkpoint_dir / f"step-{step:08d}" / CHECKPOINT_FILE, data)
    return max(shipment.checkpoints, default=None)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _relative_files(root: Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
