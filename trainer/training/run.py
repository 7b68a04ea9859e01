"""`train_adapter`: the one entry point for a training job, as a few small stages.

    photos -> base pipeline -> class images -> cached latents/embeddings -> LoRA + optimizer
    -> resume from checkpoint -> loop -> adapter files
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.training_utils import cast_training_params
from peft import LoraConfig

from trainer.families import get_family
from trainer.families.base import ModelFamily
from trainer.training.batches import TrainingDataset
from trainer.training.checkpoints import load_latest_checkpoint
from trainer.training.class_images import ensure_class_images
from trainer.training.config import TrainConfig, class_prompt_for
from trainer.training.data import ClassSet, load_class_set, load_instance_examples, photo_digest
from trainer.training.errors import TrainingError
from trainer.training.export import adapter_metadata, export_adapter
from trainer.training.loop import (
    NoHooks,
    TrainHooks,
    TrainingSession,
    TrainProgress,
    restore_checkpoint,
    run_loop,
    write_checkpoint,
)
from trainer.training.memory import (
    create_grad_scaler,
    create_optimizer,
    free_memory,
    is_out_of_memory,
    offload,
    out_of_memory_error,
    resolve_device,
    resolve_weight_dtype,
)
from trainer.training.preview import PreviewRenderer
from trainer.versions import dependency_problem

__all__ = ["TrainHooks", "TrainProgress", "TrainResult", "TrainingError", "train_adapter"]

log = logging.getLogger(__name__)
FINAL_LOSS_WINDOW = 10  # final_loss is the mean of the last steps' losses (one step is noisy)


@dataclass
class TrainResult:
    adapter_path: Path | None  # pytorch_lora_weights.safetensors; None when stopped early
    kohya_path: Path | None
    metadata: dict
    steps_done: int
    final_loss: float | None
    loss_history: list[float] = field(default_factory=list)
    preview_history: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> drift figures
    stopped: str | None = None  # "cancel" or "shutdown"
    class_images_generated: int = 0


def train_adapter(config: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) one DreamBooth-LoRA adapter. Raises TrainingError with a plain reason."""
    hooks = hooks or NoHooks()
    examples = load_instance_examples(config)  # bad photos fail here, before any model loads
    failure = None
    try:
        session, generated = _prepare_session(config, hooks, examples)
        stopped = run_loop(session, hooks)
        return _finish(session, stopped, generated, hooks)
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        failure = out_of_memory_error(config, error)
    # Outside the except block, so the traceback (and the models its frames hold) is released.
    free_memory()
    raise failure


def _prepare_session(config: TrainConfig, hooks: TrainHooks, examples) -> tuple[TrainingSession, int]:
    family = get_family(config.family)
    device = resolve_device(config)
    weight_dtype = resolve_weight_dtype(config, device)
    pipe = _load_pipeline(family, config, device, weight_dtype)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    class_sets, generated = _prepare_class_images(family, config, pipe, device, hooks)
    dataset = TrainingDataset(family, pipe, config, examples, class_sets, device, weight_dtype)
    previews = _cache_inputs(family, config, pipe, dataset, device, hooks)
    trained = _add_adapters(family, config, pipe)
    params = [p for module in trained.values() for p in module.parameters() if p.requires_grad]
    if weight_dtype != torch.float32:
        cast_training_params(list(trained.values()), dtype=torch.float32)  # LoRA weights train in fp32
    optimizer, optimizer_name = create_optimizer(
        config.optimizer, params, config.learning_rate, family.defaults.weight_decay
    )
    session = TrainingSession(
        config=config, family=family, pipe=pipe, scheduler=family.training_scheduler(pipe), dataset=dataset,
        trained=trained, params=params, optimizer=optimizer, optimizer_name=optimizer_name,
        grad_scaler=create_grad_scaler(device, weight_dtype), device=device, weight_dtype=weight_dtype,
        fingerprint=_fingerprint(config), previews=previews,
    )
    state = load_latest_checkpoint(config.checkpoint_dir, session.fingerprint)
    if state is not None:
        restore_checkpoint(session, state)
    if previews is not None and session.step < config.steps:
        previews.trained_modules = trained
        previews.render_baseline()
    return session, generated


def _load_pipeline(family: ModelFamily, config: TrainConfig, device: torch.device, dtype: torch.dtype):
    path = family.resolve_model_path(config.model_path, config.models_dir)
    try:
        pipe = family.load_pipeline(path, device, dtype, quantize_nf4=config.quantize_base == "nf4")
    except (OSError, ValueError) as error:
        raise TrainingError(
            "model_unavailable", f"The base model {path!r} could not be loaded ({type(error).__name__}).",
            "Check the hub id or folder, and that the model was downloaded to this machine.",
        ) from error
    except RuntimeError as error:
        if "gpu" not in str(error).lower():
            raise
        raise TrainingError("nf4_needs_gpu", "4-bit (NF4) quantization needs a CUDA GPU on this machine.",
                            "Set quantize_base to None, or run the worker on a GPU.") from error
    # The VAE stays in `dtype`: the pipeline decodes class images and previews with it (SDXL's upcasts itself
    # when fp16); family.encode_pixels encodes training images in the family's vae_dtype.
    return pipe


def _prepare_class_images(family, config: TrainConfig, pipe, device, hooks) -> tuple[dict[str, ClassSet], int]:
    if not config.prior_preservation:
        return {}, 0
    class_sets, generated = {}, 0
    for noun in config.class_nouns():
        prompt = class_prompt_for(noun)
        hooks.progress(TrainProgress(0, config.steps, None, None, None, f"Preparing class images: {prompt}"))
        paths, made = ensure_class_images(
            family, config.model_path, config.models_dir, config.class_cache_dir, prompt,
            config.resolution, config.num_class_images, config.seed, device, pipeline=pipe,
        )
        class_sets[noun] = load_class_set(noun, paths, config.resolution)
        generated += made
    return class_sets, generated


def _cache_inputs(family, config: TrainConfig, pipe, dataset: TrainingDataset, device,
                  hooks) -> PreviewRenderer | None:
    """Cache latents and frozen text embeddings, then move the encoders off the GPU."""
    hooks.progress(TrainProgress(0, config.steps, None, None, None, "Preparing training data"))
    frozen_text = not config.train_text_encoder
    if config.cache_latents:
        dataset.cache_latents()
    if config.cache_text_embeddings and frozen_text:
        dataset.cache_text_embeddings()
    previews = None
    if config.preview_every:
        previews = PreviewRenderer(family, pipe, config, device, trained_modules={})
        if frozen_text:
            previews.cache_embeddings()
    if config.offload_frozen_after_caching:
        modules = [pipe.vae] if config.cache_latents else []
        if config.cache_text_embeddings and frozen_text:
            modules += list(family.text_encoders(pipe).values())
        offload(modules, device)
    return previews


def _add_adapters(family: ModelFamily, config: TrainConfig, pipe) -> dict[str, torch.nn.Module]:
    """LoRA on the denoiser (and optionally the text encoders) through peft's add_adapter."""
    torch.manual_seed(config.seed)  # LoRA A matrices start Gaussian: make that reproducible
    denoiser = family.denoiser(pipe)
    if config.quantize_base == "nf4":
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(denoiser, use_gradient_checkpointing=False)
    trained = {family.denoiser_name: denoiser}
    if config.train_text_encoder:
        trained.update(family.text_encoders(pipe))
    for name, module in trained.items():
        targets = config.target_modules if module is denoiser else family.defaults.text_encoder_target_modules
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian",
                          target_modules=list(targets))
        try:
            module.add_adapter(lora)
        except (ValueError, ImportError) as error:
            if problem := dependency_problem(error):
                raise TrainingError("dependency_version", problem) from error
            raise TrainingError("bad_target_modules", f"LoRA targets {list(targets)} do not fit the {name}: {error}",
                                "Use the family's default target_modules.") from error
        if config.gradient_checkpointing:
            _enable_gradient_checkpointing(module)
        module.train()
    return trained


def _enable_gradient_checkpointing(module: torch.nn.Module) -> None:
    if hasattr(module, "enable_gradient_checkpointing"):  # diffusers
        module.enable_gradient_checkpointing()
    else:  # transformers
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _fingerprint(config: TrainConfig) -> str:
    return hashlib.sha256(f"{config.fingerprint()}:{photo_digest(config)}".encode()).hexdigest()


def _finish(session: TrainingSession, stopped: str | None, generated: int, hooks: TrainHooks) -> TrainResult:
    config = session.config
    result = TrainResult(
        adapter_path=None, kohya_path=None,
        metadata=adapter_metadata(config, session.family, session.step, session.optimizer_name),
        steps_done=session.step, final_loss=_final_loss(session.loss_history),
        loss_history=list(session.loss_history), preview_history=dict(session.preview_history),
        stopped=stopped, class_images_generated=generated,
    )
    if stopped == "cancel":
        return result
    write_checkpoint(session)  # a crash while exporting resumes here instead of retraining
    if stopped == "shutdown":
        return result
    hooks.progress(TrainProgress(session.step, config.steps, result.final_loss, None, 0.0, "Saving adapter"))
    layers, peft_configs = _adapter_layers(session)
    result.adapter_path, result.kohya_path, kohya_status = export_adapter(
        session.family, config.output_dir, layers, peft_configs, result.metadata, config.alpha
    )
    result.metadata["kohya_export"] = kohya_status
    return result


def _adapter_layers(session: TrainingSession):
    from peft.utils import get_peft_model_state_dict

    layers = {name: get_peft_model_state_dict(module) for name, module in session.trained.items()}
    configs = {name: module.peft_config["default"].to_dict() for name, module in session.trained.items()}
    return layers, configs


def _final_loss(history: list[float]) -> float | None:
    if not history:
        return None
    window = history[-FINAL_LOSS_WINDOW:]
    return sum(window) / len(window)
