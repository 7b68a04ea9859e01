"""Checkpoints: adapter weights, optimizer, step, histories and RNG state, written atomically.

Layout: checkpoint_dir/step-00000050/state.pt. A checkpoint is written into a temp folder, fsynced
and renamed into place; the newest KEEP are kept. Loading takes the newest checkpoint that reads
back whole and belongs to the same job (same config fingerprint); a half-written one is skipped.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainer.training.atomic_files import fsync_dir, fsync_file

log = logging.getLogger(__name__)

KEEP = 2
_NAME = re.compile(r"^step-(\d{8})$")
_STATE_FILE = "state.pt"


@dataclass
class CheckpointState:
    step: int
    fingerprint: str
    adapters: dict[str, dict[str, torch.Tensor]]  # pipeline component -> PEFT state dict
    optimizer: dict
    optimizer_name: str
    grad_scaler: dict | None = None
    loss_history: list[float] = field(default_factory=list)
    preview_history: dict[int, dict[str, float]] = field(default_factory=dict)
    rng: dict = field(default_factory=dict)


def capture_rng_state() -> dict:
    name, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)]
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        name, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if "python" in state:
        random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(checkpoint_dir: Path, state: CheckpointState, keep: int = KEEP) -> Path:
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(checkpoint_dir)
    final = checkpoint_dir / f"step-{state.step:08d}"
    staging = checkpoint_dir / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    torch.save(_to_payload(state), staging / _STATE_FILE)
    fsync_file(staging / _STATE_FILE)
    fsync_dir(staging)
    if final.exists():  # re-saving the same step (e.g. shutdown right after a periodic save)
        shutil.rmtree(final)
    os.replace(staging, final)
    fsync_dir(checkpoint_dir)
    _rotate(checkpoint_dir, keep)
    log.info("checkpoint saved at step %d: %s", state.step, final)
    return final


def load_latest_checkpoint(checkpoint_dir: Path, fingerprint: str) -> CheckpointState | None:
    """The newest whole checkpoint of this job, or None to start from scratch."""
    for step, folder in reversed(list_checkpoints(checkpoint_dir)):
        try:
            payload = torch.load(folder / _STATE_FILE, map_location="cpu", weights_only=True)
            state = _from_payload(payload)
        except Exception as error:  # truncated or corrupt: fall back to the previous one
            log.warning("skipping unreadable checkpoint %s (%s)", folder, type(error).__name__)
            continue
        if state.step != step:
            log.warning("skipping checkpoint %s: it records step %d", folder, state.step)
            continue
        if state.fingerprint != fingerprint:
            log.warning("ignoring checkpoint %s: it belongs to a different configuration", folder)
            return None
        return state
    return None


def list_checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoint_dir.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def _rotate(checkpoint_dir: Path, keep: int) -> None:
    for _step, folder in list_checkpoints(checkpoint_dir)[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_stale_temps(checkpoint_dir: Path) -> None:
    for path in checkpoint_dir.glob(".tmp-step-*"):
        shutil.rmtree(path, ignore_errors=True)


def _to_payload(state: CheckpointState) -> dict:
    return {
        "format": 1,
        "step": state.step,
        "fingerprint": state.fingerprint,
        "adapters": {k: {n: t.detach().cpu() for n, t in v.items()} for k, v in state.adapters.items()},
        "optimizer": state.optimizer,
        "optimizer_name": state.optimizer_name,
        "grad_scaler": state.grad_scaler,
        "loss_history": list(state.loss_history),
        "preview_history": {int(k): dict(v) for k, v in state.preview_history.items()},
        "rng": state.rng,
    }


def _from_payload(payload: dict) -> CheckpointState:
    return CheckpointState(
        step=int(payload["step"]),
        fingerprint=payload["fingerprint"],
        adapters=payload["adapters"],
        optimizer=payload["optimizer"],
        optimizer_name=payload["optimizer_name"],
        grad_scaler=payload.get("grad_scaler"),
        loss_history=list(payload.get("loss_history", [])),
        preview_history={int(k): v for k, v in payload.get("preview_history", {}).items()},
        rng=payload.get("rng", {}),
    )
