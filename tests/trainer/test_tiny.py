"""Tiny models: built once, deterministic, crash-safe, and loadable like real checkpoints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from tests.trainer.training_fixtures import models_dir  # noqa: F401  (session fixture)
from trainer.families import get_family
from trainer.tiny import (
    TINY_MODEL_NAMES,
    TINY_RESOLUTION,
    build_clip_tokenizer,
    build_t5_tokenizer,
    ensure_tiny_model,
)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_clip_tokenizer_keeps_common_words_whole_and_splits_triggers():
    tokenizer = build_clip_tokenizer()
    for word in ("photo", "person", "painting", "beach", "woman"):
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word
    assert len(tokenizer.encode("rraj", add_special_tokens=False)) > 1
    ids = tokenizer("a photo of rraj person").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id == len(tokenizer) - 1  # CLIP keeps the special tokens last


def test_tokenizers_are_deterministic():
    first, second = build_clip_tokenizer(), build_clip_tokenizer()
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert build_t5_tokenizer().backend_tokenizer.to_str() == build_t5_tokenizer().backend_tokenizer.to_str()


def test_t5_tokenizer_words_and_end_token():
    tokenizer = build_t5_tokenizer()
    ids = tokenizer("a photo of rraj person").input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert "\u2581photo" in tokens and "\u2581person" in tokens
    assert tokens[-1] == "</s>"
    assert "\u2581rraj" not in tokens  # the rare trigger splits into pieces


@pytest.mark.parametrize("name", TINY_MODEL_NAMES)
def test_tiny_model_loads_through_from_pretrained_and_generates(models_dir, name):  # noqa: F811
    family = get_family(name)
    path = ensure_tiny_model(name, models_dir)
    assert (path / "model_index.json").is_file()
    pipe = family.load_pipeline(str(path), "cpu", torch.float32)
    assert type(pipe) is family.pipeline_class
    image = pipe("a photo of a person", generator=torch.Generator().manual_seed(0),
                 **{**family.generation_kwargs(TINY_RESOLUTION), "num_inference_steps": 2}).images[0]
    assert image.size == (TINY_RESOLUTION, TINY_RESOLUTION)
    denoiser_params = sum(p.numel() for p in family.denoiser(pipe).parameters())
    assert denoiser_params < 3_000_000


def test_ensure_is_idempotent_and_rebuilds_identically(models_dir, tmp_path):  # noqa: F811
    first = ensure_tiny_model("tiny-sd15", models_dir)
    stamp = (first / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model("tiny-sd15", models_dir) == first
    assert (first / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    rebuilt = ensure_tiny_model("tiny-sd15", tmp_path)
    assert _tree_digest(rebuilt) == _tree_digest(first)


def test_half_built_or_stale_model_is_replaced(tmp_path):
    # A crash mid-build leaves only a hidden staging folder, which is never taken for a model.
    (tmp_path / ".tiny-sdxl-building-crashed").mkdir()
    stale = tmp_path / "tiny-sdxl"
    stale.mkdir()
    (stale / "likeness_tiny.json").write_text(json.dumps({"name": "tiny-sdxl", "version": -1}))
    path = ensure_tiny_model("tiny-sdxl", tmp_path)
    assert (path / "text_encoder_2" / "model.safetensors").is_file()
    assert json.loads((path / "likeness_tiny.json").read_text())["version"] >= 1
    assert not any(p.name.startswith(".tiny-sdxl-stale") for p in tmp_path.iterdir())


def test_unknown_tiny_model_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny model"):
        ensure_tiny_model("tiny-nope", tmp_path)
