"""The training loop: one optimizer step per iteration, hooks in between."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from trainer.families.base import ModelFamily
from trainer.training.batches import TrainingDataset
from trainer.training.checkpoints import (
    CheckpointState,
    capture_rng_state,
    restore_rng_state,
    save_checkpoint,
)
from trainer.training.config import TrainConfig
from trainer.training.errors import TrainingError
from trainer.training.memory import MAX_GRAD_NORM, autocast_context
from trainer.training.preview import PreviewRenderer
from trainer.training.seeding import step_generator

log = logging.getLogger(__name__)

STOP_REASONS = ("cancel", "shutdown")


@dataclass
class TrainProgress:
    step: int
    total: int
    loss: float | None
    it_per_s: float | None
    eta_s: float | None
    message: str


class TrainHooks(Protocol):
    def progress(self, p: TrainProgress) -> None: ...
    def preview(self, step: int, images: dict[str, Image.Image]) -> None: ...
    def should_stop(self) -> str | None: ...
    def between_steps(self) -> None: ...


class NoHooks:
    """Hooks that do nothing: train to the end."""

    def progress(self, p: TrainProgress) -> None:
        pass

    def preview(self, step: int, images: dict[str, Image.Image]) -> None:
        pass

    def should_stop(self) -> str | None:
        return None

    def between_steps(self) -> None:
        pass


@dataclass
class TrainingSession:
    """Everything a running job holds: models, data, optimizer and progress."""

    config: TrainConfig
    family: ModelFamily
    pipe: Any
    scheduler: Any
    dataset: TrainingDataset
    trained: dict[str, torch.nn.Module]  # pipeline component -> module carrying the LoRA
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    optimizer_name: str
    grad_scaler: Any
    device: torch.device
    weight_dtype: torch.dtype
    fingerprint: str
    previews: PreviewRenderer | None = None
    step: int = 0
    loss_history: list[float] = field(default_factory=list)
    preview_history: dict[int, dict[str, float]] = field(default_factory=dict)


def combine_losses(per_example: torch.Tensor, num_instance: int,
                   prior_loss_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """DreamBooth's loss: instance loss + prior_loss_weight * class (prior) loss.

    The batch holds instance examples first, then class examples. Returns (total, instance, prior).
    """
    instance = per_example[:num_instance].mean()
    if per_example.shape[0] == num_instance:
        return instance, instance, None
    prior = per_example[num_instance:].mean()
    return instance + prior_loss_weight * prior, instance, prior


def train_step(session: TrainingSession, step: int) -> torch.Tensor:
    """One optimizer step; every random draw comes from generators seeded by (seed, step)."""
    config = session.config
    batch = session.dataset.batch(step)
    generator = step_generator(config.seed, step, "noise")
    with autocast_context(session.device, session.weight_dtype):
        per_example = session.family.loss_per_example(
            session.pipe, session.scheduler, batch.latents, batch.cond, generator, config.min_snr_gamma
        )
    loss, _instance, _prior = combine_losses(per_example, batch.num_instance, config.prior_loss_weight)
    scaler = session.grad_scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(session.optimizer)
        torch.nn.utils.clip_grad_norm_(session.params, MAX_GRAD_NORM)
        scaler.step(session.optimizer)
        scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(session.params, MAX_GRAD_NORM)
        session.optimizer.step()
    session.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


class StepTimer:
    """Steps per second as a moving average of step durations (previews and saves excluded)."""

    def __init__(self, smoothing: float = 0.1):
        self.smoothing = smoothing
        self.mean_s: float | None = None

    def record(self, seconds: float) -> None:
        self.mean_s = seconds if self.mean_s is None else self.mean_s + self.smoothing * (seconds - self.mean_s)

    def rates(self, remaining: int) -> tuple[float | None, float | None]:
        if not self.mean_s:
            return None, None
        return 1.0 / self.mean_s, remaining * self.mean_s


def run_loop(session: TrainingSession, hooks: TrainHooks) -> str | None:
    """Train until config.steps; returns None when done, or 'cancel' / 'shutdown'."""
    total = session.config.steps
    timer = StepTimer()
    while session.step < total:
        stop = _stop_request(hooks)
        if stop:
            return stop
        started = time.perf_counter()
        loss = train_step(session, session.step).item()
        timer.record(time.perf_counter() - started)
        if not math.isfinite(loss):
            raise TrainingError("diverged", f"Training diverged: the loss became {loss} at step {session.step + 1}.",
                                "Lower the learning rate, or use bf16 instead of fp16.")
        session.step += 1
        session.loss_history.append(loss)
        it_per_s, eta_s = timer.rates(total - session.step)
        hooks.progress(TrainProgress(session.step, total, loss, it_per_s, eta_s,
                                     f"Training step {session.step}/{total}"))
        _maybe_preview(session, hooks)
        _maybe_checkpoint(session)
        hooks.between_steps()
    return None


def _stop_request(hooks: TrainHooks) -> str | None:
    request = hooks.should_stop()
    if not request:
        return None
    if request not in STOP_REASONS:
        log.warning("unknown stop request %r; treating it as cancel", request)
        return "cancel"
    return request


def _maybe_preview(session: TrainingSession, hooks: TrainHooks) -> None:
    every = session.config.preview_every
    if session.previews is None or not every or session.step % every:
        return
    images = session.previews.render()
    session.preview_history[session.step] = session.previews.drift(images)
    hooks.preview(session.step, images)


def _maybe_checkpoint(session: TrainingSession) -> None:
    every = session.config.checkpoint_every
    if every and session.step % every == 0 and session.step < session.config.steps:
        write_checkpoint(session)


def write_checkpoint(session: TrainingSession):
    state = CheckpointState(
        step=session.step,
        fingerprint=session.fingerprint,
        adapters={name: get_peft_model_state_dict(module) for name, module in session.trained.items()},
        optimizer=session.optimizer.state_dict(),
        optimizer_name=session.optimizer_name,
        grad_scaler=session.grad_scaler.state_dict() if session.grad_scaler is not None else None,
        loss_history=session.loss_history,
        preview_history=session.preview_history,
        rng=capture_rng_state(),
    )
    return save_checkpoint(session.config.checkpoint_dir, state)


def restore_checkpoint(session: TrainingSession, state: CheckpointState) -> None:
    """Put a checkpoint's adapter weights, optimizer state, step and histories into the session."""
    for name, weights in state.adapters.items():
        result = set_peft_model_state_dict(session.trained[name], weights)
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"checkpoint does not match the {name} adapter: {result.unexpected_keys[:3]}")
    if state.optimizer_name == session.optimizer_name:
        session.optimizer.load_state_dict(state.optimizer)
    else:
        log.warning("checkpoint used %s, this run %s: optimizer state restarts (weights are kept)",
                    state.optimizer_name, session.optimizer_name)
    if session.grad_scaler is not None and state.grad_scaler:
        session.grad_scaler.load_state_dict(state.grad_scaler)
    session.step = state.step
    session.loss_history = list(state.loss_history)
    session.preview_history = dict(state.preview_history)
    restore_rng_state(state.rng)
    log.info("resumed from checkpoint at step %d", state.step)
