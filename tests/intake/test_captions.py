"""Caption text: the template, sanitising user text, and personalising generated captions."""

from __future__ import annotations


import pytest

from intake.captions import MAX_CAPTION_CHARS, personalise_caption, sanitise_caption, template_caption


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
