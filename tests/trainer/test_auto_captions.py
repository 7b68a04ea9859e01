"""BLIP captioning in the worker, through a tiny random BLIP model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from intake.captions import sanitise_caption
from trainer.auto_captions import auto_caption, caption_model_available


def test_no_model_means_no_auto_captions(tmp_path):
    assert auto_caption([tmp_path / "x.png"], None, "rraj", "person") is None
    assert auto_caption([tmp_path / "x.png"], tmp_path, "rraj", "person") is None
    assert not caption_model_available(tmp_path / "missing")


def build_tiny_blip(folder: Path) -> None:
    """A BLIP captioner with random weights and a 17-word vocabulary, saved like a real one."""
    torch = pytest.importorskip("torch")
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "man", "in", "suit", "smiling",
             "the", "woman", "beach", "red", "hat"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=BertTokenizer(str(folder / "vocab.txt")),
    )
    text = dict(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37, max_position_embeddings=64, bos_token_id=2, sep_token_id=3, pad_token_id=0,
                eos_token_id=3)
    vision = dict(hidden_size=32, image_size=32, patch_size=8, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=37)
    torch.manual_seed(0)
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.mark.slow
def test_auto_caption_runs_blip_and_works_in_the_trigger(tmp_path):
    model_dir = tmp_path / "blip"
    build_tiny_blip(model_dir)
    assert caption_model_available(model_dir)
    paths = []
    for index, shade in enumerate((0, 128, 255)):
        path = tmp_path / f"photo{index}.png"
        Image.fromarray(np.full((40, 40, 3), shade, np.uint8)).save(path)
        paths.append(path)
    captions = auto_caption(paths, model_dir, "rraj", "person")
    assert captions is not None and len(captions) == 3
    for caption in captions:
        assert sanitise_caption(caption, "rraj", "person").ok
        assert caption.startswith("a photo of") and "rraj person" in caption
