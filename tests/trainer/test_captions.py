"""Captions: the template, sanitising user text, and BLIP captioning through a tiny random model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.captions import (
    MAX_CAPTION_CHARS,
    auto_caption,
    caption_model_available,
    personalise_caption,
    sanitise_caption,
    template_caption,
)


def test_template():
    assert template_caption("rraj", "person") == "a photo of rraj person"


@pytest.mark.parametrize("raw", [None, "", "   ", "\u200b\u200d\x00\n"])
def test_blank_caption_uses_the_template(raw):
    verdict = sanitise_caption(raw, "rraj", "person")
    assert verdict.ok and verdict.code == "template" and verdict.caption == "a photo of rraj person"


def test_control_and_invisible_characters_are_stripped():
    raw = "rraj\u200b person\x00 on\ta   beach\u202e\n\u00a0smiling\ufeff"
    verdict = sanitise_caption(raw, "rraj", "person")
    assert verdict.ok and verdict.code == "ok"
    assert verdict.caption == "rraj person on a beach smiling"


def test_zero_width_space_inside_the_trigger_is_removed_before_the_check():
    assert sanitise_caption("a photo of rr\u200baj", "rraj", "person").ok


def test_trigger_must_be_a_whole_word_in_any_case():
    assert sanitise_caption("A photo of RRAJ at the park", "rraj", "person").caption == "A photo of rraj at the park"
    assert sanitise_caption("rraj's new haircut", "rraj", "person").ok
    for raw in ("a photo of a person", "a photo of rrajesh", "xrraj on a bike"):
        verdict = sanitise_caption(raw, "rraj", "person")
        assert not verdict.ok and verdict.code == "missing_trigger"
        assert "'rraj'" in verdict.message


def test_too_long_caption_is_refused_with_the_numbers():
    raw = "rraj " + "on a very long walk " * 20
    verdict = sanitise_caption(raw, "rraj", "person")
    assert not verdict.ok and verdict.code == "too_long"
    assert str(MAX_CAPTION_CHARS) in verdict.message
    at_limit = "rraj " + "x" * (MAX_CAPTION_CHARS - 5)
    assert sanitise_caption(at_limit, "rraj", "person").ok


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("arafed man in a suit at a desk", "a photo of rraj person in a suit at a desk"),
        ("a photo of a woman smiling on the beach", "a photo of a rraj person smiling on the beach"),
        ("a red car parked on a street", "a photo of rraj person, a red car parked on a street"),
        ("", "a photo of rraj person"),
    ],
)
def test_generated_captions_are_personalised(generated, expected):
    assert personalise_caption(generated, "rraj", "person") == expected


def test_personalised_caption_fits_the_limit():
    caption = personalise_caption("a man " + "with a hat " * 60, "rraj", "person")
    assert len(caption) <= MAX_CAPTION_CHARS and sanitise_caption(caption, "rraj", "person").ok


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
