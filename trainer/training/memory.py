"""Device, precision, optimizer and out-of-memory handling: the memory switches in one place."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

import torch

from trainer.training.config import TrainConfig
from trainer.training.errors import TrainingError

log = logging.getLogger(__name__)

ADAM_BETAS = (0.9, 0.999)  # diffusers' DreamBooth scripts' defaults
ADAM_EPSILON = 1e-8
MAX_GRAD_NORM = 1.0


def resolve_device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("no_gpu", "This job asks for a CUDA GPU, but none is available to the worker.",
                            "Set device to 'auto' or 'cpu', or check the GPU driver.")
    return device


def resolve_weight_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """The dtype of the frozen weights: fp16/bf16 on a GPU, fp32 on CPU."""
    if device.type != "cuda" or config.mixed_precision == "no":
        if config.mixed_precision != "no":
            log.info("mixed precision %s is for GPUs; training in fp32 on %s", config.mixed_precision, device)
        return torch.float32
    if config.mixed_precision == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16; using fp16 instead")
        return torch.float16
    return torch.bfloat16 if config.mixed_precision == "bf16" else torch.float16


def autocast_context(device: torch.device, weight_dtype: torch.dtype):
    if device.type == "cuda" and weight_dtype != torch.float32:
        return torch.autocast(device_type="cuda", dtype=weight_dtype)
    return contextlib.nullcontext()


def create_grad_scaler(device: torch.device, weight_dtype: torch.dtype):
    """fp16 needs loss scaling; bf16 and fp32 do not."""
    if device.type == "cuda" and weight_dtype == torch.float16:
        return torch.amp.GradScaler("cuda")
    return None


def create_optimizer(name: str, params: list[torch.nn.Parameter], learning_rate: float,
                     weight_decay: float) -> tuple[torch.optim.Optimizer, str]:
    """AdamW8bit from bitsandbytes where it can run, else torch AdamW. Returns (optimizer, name used)."""
    kwargs = dict(lr=learning_rate, betas=ADAM_BETAS, eps=ADAM_EPSILON, weight_decay=weight_decay)
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb

            _probe_8bit_adam(bnb, params[0].device)
            return bnb.optim.AdamW8bit(params, **kwargs), "adamw8bit"
        except Exception as error:  # ImportError, or a build that cannot run on this machine
            log.warning("8-bit AdamW unavailable (%s: %s); falling back to torch AdamW",
                        type(error).__name__, error)
    return torch.optim.AdamW(params, **kwargs), "adamw"


def _probe_8bit_adam(bnb, device: torch.device) -> None:
    """One step on a throwaway tensor: importing bitsandbytes is not proof that it runs here."""
    probe = torch.nn.Parameter(torch.zeros(4096, device=device))
    probe.grad = torch.ones_like(probe)
    bnb.optim.AdamW8bit([probe], lr=1e-3).step()


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def out_of_memory_error(config: TrainConfig, error: BaseException) -> TrainingError:
    """A plain reason plus the switches that would help, most effective first."""
    where = "system RAM" if isinstance(error, MemoryError) else "GPU memory"
    tips = []
    if config.quantize_base is None and config.spec.supports_nf4:
        tips.append("turn on NF4 quantization (quantize_base='nf4')")
    if not config.gradient_checkpointing:
        tips.append("enable gradient checkpointing")
    if config.resolution > 512:
        tips.append(f"lower the resolution (e.g. {max(512, config.resolution // 2)})")
    if config.batch_size > 1:
        tips.append("use batch size 1")
    if config.train_text_encoder:
        tips.append("train the UNet only (train_text_encoder=False)")
    if config.optimizer != "adamw8bit":
        tips.append("use the 8-bit AdamW optimizer")
    if not tips:
        tips.append("close other programs using the GPU, or use a smaller base model")
    return TrainingError(
        "out_of_memory",
        f"Training ran out of {where} ({config.family} at {config.resolution} px).",
        "Try: " + "; ".join(tips) + ".",
    )


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def on_device(module: torch.nn.Module | None, device: torch.device) -> Iterator[None]:
    """Temporarily bring an offloaded module back to `device` (e.g. the VAE for previews)."""
    if module is None:
        yield
        return
    original = next(module.parameters()).device
    if original != device:
        module.to(device)
    try:
        yield
    finally:
        if original != device:
            module.to(original)


def offload(modules: list[torch.nn.Module], device: torch.device) -> None:
    """Move frozen modules off the GPU once their outputs are cached."""
    if device.type == "cpu":
        return
    for module in modules:
        try:
            module.to("cpu")
        except (ValueError, RuntimeError, NotImplementedError) as error:  # e.g. a quantized model that cannot move
            log.warning("could not move %s off the GPU (%s); keeping it there", type(module).__name__, error)
    free_memory()
