"""Writing the finished adapter: the standard diffusers file plus a kohya/ComfyUI copy.

The diffusers file is produced by the pipeline class's own `save_lora_weights` (into a staging
folder), then rewritten atomically with our metadata added next to diffusers' own
`lora_adapter_metadata` (the LoraConfig that `load_lora_weights` reads back).

safetensors writes its `__metadata__` in a random order (a Rust HashMap; safetensors issue #584), so the same
weights and metadata gave a different file, and a different whole-file SHA-256, on every run. Both files are
therefore written with the metadata keys sorted (the fix proposed upstream in safetensors PR #790), and the LoraConfig
handed to diffusers has its sets (target_modules) as sorted lists (`stable_config`). The LoRA hash that UIs show
covers only the tensor data (storage/lora_hash.py), which never depended on the header. Both files carry kohya's
precalculated `sshs_model_hash` and `sshs_legacy_hash` of their own tensors (`with_kohya_hashes`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from storage.lora_hash import HEADER_LENGTH_BYTES, KOHYA_FILE_NAME

from trainer.families.base import ModelFamily
from trainer.training.atomic_files import write_atomically
from trainer.training.config import TrainConfig, instance_prompt_for, subject_prompt_for

ADAPTER_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
KOHYA_FILE = KOHYA_FILE_NAME
# kohya sd-scripts' precalculated hashes (sd-webui-additional-networks reads them instead of hashing the file):
# computed over the tensors serialised with the `ss_*` metadata alone, so user metadata never changes them.
LEGACY_HASH_OFFSET, LEGACY_HASH_BYTES, LEGACY_HASH_CHARS = 0x100000, 0x10000, 8
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
        "output_name": "likeness-" + "-".join(config.triggers()),
        "num_train_images": sum(len(s.photos) for s in config.subjects),
        "tag_frequency": tag_frequency(config),
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


def tag_frequency(config: TrainConfig) -> dict[str, dict[str, int]]:
    """kohya's `ss_tag_frequency`: per subject (kohya's image folder, named "1_<trigger> <class>"), how many training
    captions carry each comma-separated tag. The trigger and class noun are tags of every photo, so UIs that list
    a LoRA's training tags (A1111's, Civitai's) show the trigger."""
    frequency = {}
    for subject in config.subjects:
        counts: Counter[str] = Counter()
        for photo in subject.photos:
            tags = [subject.trigger, subject.class_noun]
            for part in instance_prompt_for(subject, photo).split(","):
                tag = " ".join(part.split())
                if tag and tag != subject_prompt_for(subject) and tag not in tags:
                    tags.append(tag)
            counts.update(tags)
        frequency[f"1_{subject.trigger} {subject.class_noun}"] = dict(counts)
    return frequency


def safetensors_metadata(metadata: dict) -> dict[str, str]:
    """Strings for the safetensors header, plus the kohya `ss_*` keys that UIs display."""
    header = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    header.update({
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(metadata["rank"]),
        "ss_network_alpha": str(metadata["alpha"]),
        "ss_resolution": str((metadata["resolution"], metadata["resolution"])),  # kohya writes "(512, 512)"
        "ss_max_train_steps": str(metadata["steps"]),
        "ss_seed": str(metadata["seed"]),
        "ss_base_model_version": _KOHYA_BASE_VERSION[metadata["architecture"]],
        "ss_sd_model_name": metadata["base_model"],
        "ss_output_name": metadata["output_name"],
        "ss_num_train_images": str(metadata["num_train_images"]),
        "ss_num_reg_images": str(metadata["num_class_images"]),
        "ss_learning_rate": str(metadata["learning_rate"]),
        "ss_tag_frequency": json.dumps(metadata["tag_frequency"], ensure_ascii=False),
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
        family.save_lora_weights(staging, layers, {c: stable_config(cfg) for c, cfg in peft_configs.items()})
        tensors, diffusers_header = _read_safetensors(staging / ADAPTER_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    diffusers_metadata = with_kohya_hashes(tensors, {**diffusers_header, **header})
    adapter_path = write_atomically(
        output_dir / ADAPTER_FILE, lambda temp: save_sorted(tensors, temp, diffusers_metadata)
    )
    kohya = family.kohya_state_dict(layers, alpha)
    if kohya is None:
        return adapter_path, None, f"unavailable: {family.kohya_unavailable_reason}"
    kohya_metadata = with_kohya_hashes(kohya, header)
    kohya_path = write_atomically(output_dir / KOHYA_FILE, lambda temp: save_sorted(kohya, temp, kohya_metadata))
    return adapter_path, kohya_path, "written"


def stable_config(config: dict) -> dict:
    """A LoraConfig dict with its sets (`target_modules`...) as sorted lists. diffusers writes a set as
    `list(value)`, whose order follows string hashing, which changes with every process (PYTHONHASHSEED): the same
    training gave different bytes in `lora_adapter_metadata`."""
    return {key: sorted(value) if isinstance(value, (set, frozenset)) else value for key, value in config.items()}


def with_kohya_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, str]:
    """The metadata plus `sshs_model_hash` and `sshs_legacy_hash`, as kohya sd-scripts writes them: the SHA-256 of
    the tensor data, and the first 8 hex digits of the SHA-256 of 64 KiB at 1 MiB into the file, both of the
    tensors saved with only the `ss_*` keys as metadata (a file under 1 MiB hashes no bytes there)."""
    data = save(tensors, metadata={key: value for key, value in metadata.items() if key.startswith("ss_")})
    header_end = HEADER_LENGTH_BYTES + int.from_bytes(data[:HEADER_LENGTH_BYTES], "little")
    window = data[LEGACY_HASH_OFFSET:LEGACY_HASH_OFFSET + LEGACY_HASH_BYTES]
    return {**metadata, "sshs_model_hash": hashlib.sha256(data[header_end:]).hexdigest(),
            "sshs_legacy_hash": hashlib.sha256(window).hexdigest()[:LEGACY_HASH_CHARS]}


def save_sorted(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' own serialisation, with the header's `__metadata__` keys put in sorted order: the same tensors
    and metadata always give the same bytes. The tensor data and its offsets are left exactly as written."""
    data = save(tensors, metadata=metadata)
    header_end = HEADER_LENGTH_BYTES + int.from_bytes(data[:HEADER_LENGTH_BYTES], "little")
    header = json.loads(data[HEADER_LENGTH_BYTES:header_end])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes with spaces
    with open(path, "wb") as handle:
        handle.write(len(text).to_bytes(HEADER_LENGTH_BYTES, "little"))
        handle.write(text)
        handle.write(memoryview(data)[header_end:])


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        header = dict(handle.metadata() or {})
    return tensors, header
