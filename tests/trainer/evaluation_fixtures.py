"""Tiny CLIP and DINO checkpoints with seeded random weights, saved like real ones, so the embedder code paths run
through `from_pretrained` without any download. Import explicitly (conftest.py belongs to others)."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_IMAGE = 32


def build_tiny_clip(folder: Path) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from trainer.tiny import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # as in OpenAI's checkpoints
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, projection_dim=16, **ids)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  image_size=TINY_IMAGE, patch_size=8, projection_dim=16)
    torch.manual_seed(7)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": TINY_IMAGE},
                       crop_size={"height": TINY_IMAGE, "width": TINY_IMAGE}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_dino(folder: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(8)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=TINY_IMAGE, patch_size=8)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": TINY_IMAGE, "width": TINY_IMAGE}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_dino_path(tmp_path_factory) -> Path:
    return build_tiny_dino(tmp_path_factory.mktemp("tiny-dino"))
