"""Writing the finished adapter: the standard diffusers file plus a kohya/ComfyUI copy.

The diffusers file is produced by the pipeline class's own `save_lora_weights` (into a staging
folder), then rewritten atomically with our metadata added next to diffusers' own
`lora_adapter_metadata` (the LoraConfig that `load_lora_weights` reads back).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trainer.families.base import ModelFamily
from trainer.training.atomic_files import write_atomically
from trainer.training.config import TrainConfig

ADAPTER_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
KOHYA_FILE = "lora_kohya.safetensors"
METADATA_VERSION = "1"
_KOHYA_BASE_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}


def adapter_metadata(config: TrainConfig, family: ModelFamily, steps_done: int, optimizer_name: str) -> dict:
    """What the adapter is, as plain values (also returned in TrainResult.metadata)."""
    return {
        "likeness_metadata_version": METADATA_VERSION,
        "base_model": family.model_identity(config.model_path),
        "family": config.family,
        "architecture": family.spec.base,
        "triggers": config.triggers(),
        "class_nouns": [s.class_noun for s in config.subjects],
        "rank": config.rank,
        "alpha": config.alpha,
        "target_modules": list(config.target_modules),
        "train_text_encoder": config.train_text_encoder,
        "steps": steps_done,
        "learning_rate": config.learning_rate,
        "prior_preservation": config.prior_preservation,
        "prior_loss_weight": config.prior_loss_weight,
        "num_class_images": config.num_class_images if config.prior_preservation else 0,
        "min_snr_gamma": config.min_snr_gamma,
        "seed": config.seed,
        "resolution": config.resolution,
        "quantize_base": config.quantize_base,
        "optimizer": optimizer_name,
    }


def safetensors_metadata(metadata: dict) -> dict[str, str]:
    """Strings for the safetensors header, plus the kohya `ss_*` keys that UIs display."""
    header = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    header.update({
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(metadata["rank"]),
        "ss_network_alpha": str(metadata["alpha"]),
        "ss_resolution": str(metadata["resolution"]),
        "ss_max_train_steps": str(metadata["steps"]),
        "ss_seed": str(metadata["seed"]),
        "ss_base_model_version": _KOHYA_BASE_VERSION[metadata["architecture"]],
        "ss_sd_model_name": metadata["base_model"],
    })
    return header


def export_adapter(family: ModelFamily, output_dir: Path, layers: dict[str, dict[str, torch.Tensor]],
                   peft_configs: dict[str, dict], metadata: dict, alpha: float) -> tuple[Path, Path | None, str]:
    """Write both files atomically; returns (adapter path, kohya path or None, kohya status)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    header = safetensors_metadata(metadata)
    layers = {c: {k: v.detach().to("cpu").contiguous() for k, v in sd.items()} for c, sd in layers.items()}
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=output_dir))
    try:
        family.save_lora_weights(staging, layers, peft_configs)
        tensors, diffusers_header = _read_safetensors(staging / ADAPTER_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    adapter_path = write_atomically(
        output_dir / ADAPTER_FILE, lambda temp: save_file(tensors, temp, metadata={**diffusers_header, **header})
    )
    kohya = family.kohya_state_dict(layers, alpha)
    if kohya is None:
        return adapter_path, None, f"unavailable: {family.kohya_unavailable_reason}"
    kohya_path = write_atomically(output_dir / KOHYA_FILE, lambda temp: save_file(kohya, temp, metadata=header))
    return adapter_path, kohya_path, "written"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        header = dict(handle.metadata() or {})
    return tensors, header
