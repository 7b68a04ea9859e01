"""Trigger tokens: validation codes, look-alike collisions, suggestions and the tokenizer preference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from intake.triggers import (
    CLASS_NOUNS,
    load_family_tokenizer_encode,
    needs_face,
    normalise_trigger,
    suggest_trigger,
    trigger_skeleton,
    validate_class_noun,
    validate_trigger,
)

ROOT = Path(__file__).resolve().parents[2]


def test_normalise_folds_width_case_and_spaces():
    assert normalise_trigger("  RRaj ") == "rraj"
    assert normalise_trigger("\uff52\uff52\uff41\uff4a") == "rraj"  # full-width letters


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("rraj", "ok"),
        ("OHWX", "ok"),
        ("k1wi", "ok"),
        ("", "empty"),
        ("   ", "empty"),
        ("ab", "too_short"),
        ("a" * 21, "too_long"),
        ("rr aj", "invalid_chars"),
        ("rr-aj", "invalid_chars"),
        ("caf\u00e9", "invalid_chars"),
        ("rr\u0430j", "lookalike_chars"),  # Cyrillic a
        ("\u0455ks", "lookalike_chars"),  # Cyrillic dze
        ("2024", "no_letters"),
        ("person", "class_noun"),
        ("dog2", "class_noun"),
        ("pers0n", "class_noun"),
        ("table", "common_word"),
        ("kiwi", "common_word"),
        ("alice", "common_word"),
        ("table7", "common_word"),
    ],
)
def test_validation_codes(raw, code):
    verdict = validate_trigger(raw)
    assert verdict.code == code, verdict.message
    assert verdict.ok == (code == "ok")
    assert verdict.message


def test_every_class_noun_is_refused():
    assert all(validate_trigger(noun).code == "class_noun" for noun in CLASS_NOUNS if len(noun) >= 3)


def test_cyrillic_lookalike_gets_a_specific_message():
    verdict = validate_trigger("rr\u0430j")
    assert "Cyrillic" in verdict.message and "'a'" in verdict.message


@pytest.mark.parametrize(
    ("a", "b"),
    [("bobo", "bob0"), ("kiwl", "k1wi"), ("rnia", "mia"), ("vvolf", "wolf"), ("clara", "dara"), ("sasha", "5asha"),
     ("rr\u0430j", "rraj")],
)
def test_confusable_pairs_share_a_skeleton(a, b):
    assert trigger_skeleton(a) == trigger_skeleton(b)


@pytest.mark.parametrize(("a", "b"), [("rraj", "rajj"), ("ohwx", "ohwz"), ("mia", "nia"), ("zorv", "zorb")])
def test_distinct_tokens_keep_distinct_skeletons(a, b):
    assert trigger_skeleton(a) != trigger_skeleton(b)


def test_lookalike_of_a_taken_trigger_is_refused():
    taken = {trigger_skeleton("rrbob")}
    assert validate_trigger("rrb0b", taken).code == "taken"
    assert validate_trigger("rrbob", taken).code == "taken"
    assert validate_trigger("rrbub", taken).ok


def test_class_noun_validation():
    assert validate_class_noun(" Woman ").token == "woman" and validate_class_noun("woman").ok
    assert validate_class_noun("Golden  Retriever").token == "golden retriever"
    assert validate_class_noun("golden retriever").ok
    assert validate_class_noun("").code == "empty"
    assert validate_class_noun("a very fluffy dog").code == "too_long"
    assert validate_class_noun("t-rex").code == "invalid_chars"
    assert validate_class_noun("dog2").code == "invalid_chars"


def test_suggestions_derive_from_the_hint_and_are_valid():
    suggestions = suggest_trigger("Raj Patel", count=5)
    assert suggestions[0] == "rraj"
    assert len(suggestions) == 5 and len(set(map(trigger_skeleton, suggestions))) == 5
    assert all(validate_trigger(s).ok and "raj" in s for s in suggestions[:3])


def test_suggestions_are_deterministic_and_avoid_taken_ones():
    assert suggest_trigger("Raj", count=4) == suggest_trigger("Raj", count=4)
    taken = {trigger_skeleton("rraj"), trigger_skeleton("rajj")}
    suggestions = suggest_trigger("Raj", taken, count=4)
    assert not set(map(trigger_skeleton, suggestions)) & taken
    assert all(validate_trigger(s, taken).ok for s in suggestions)


@pytest.mark.parametrize("hint", ["", "!!!", "\u674e\u5a1c", "Jos\u00e9"])
def test_suggestions_exist_for_any_hint(hint):
    suggestions = suggest_trigger(hint, count=3)
    assert len(suggestions) == 3 and all(validate_trigger(s).ok for s in suggestions)


def test_compact_encodings_are_preferred():
    plain = suggest_trigger("Raj", count=8)
    favourite = plain[5]

    def encode(text: str) -> list[int]:  # pretend only `favourite` is in the vocabulary as one token
        return [7] if text == favourite else [1, 2, 3, 4]

    assert suggest_trigger("Raj", encode=encode, count=1) == [favourite]


def test_one_and_two_token_candidates_keep_the_hint_order():
    plain = suggest_trigger("Raj", count=6)
    encode = lambda text: [0] * (1 if text == plain[3] else 2)  # noqa: E731
    assert suggest_trigger("Raj", encode=encode, count=6) == plain


def test_a_failing_tokenizer_does_not_break_suggestions():
    def broken(text: str) -> list[int]:
        raise RuntimeError("tokenizer exploded")

    assert suggest_trigger("Raj", encode=broken, count=2) == suggest_trigger("Raj", count=2)


def write_clip_tokenizer(folder: Path, merges: list[str]) -> None:
    """A minimal CLIP BPE vocabulary: single characters plus the given merges."""
    folder.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    for merge in merges:
        vocab[merge.replace(" ", "")] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def test_family_tokenizer_is_loaded_and_steers_suggestions(tmp_path):
    plain = suggest_trigger("Raj", count=8)
    last = plain[-1]
    # Merges that make `last` a single token; everything else stays one token per character.
    assert len(last) == 4, last
    merges = [f"{last[0]} {last[1]}", f"{last[2]} {last[3]}</w>", f"{last[:2]} {last[2:]}</w>"]
    write_clip_tokenizer(tmp_path / "tokenizer", merges)
    encode = load_family_tokenizer_encode(tmp_path)
    assert encode is not None
    assert len(encode(last)) == 1 and len(encode("zzzz")) == 4
    assert suggest_trigger("Raj", encode=encode, count=1) == [last]


def test_missing_tokenizer_gives_none(tmp_path):
    assert load_family_tokenizer_encode(tmp_path) is None
    (tmp_path / "tokenizer").mkdir()
    assert load_family_tokenizer_encode(tmp_path) is None  # no vocabulary files
    (tmp_path / "tokenizer" / "vocab.json").write_text("{not json")
    (tmp_path / "tokenizer" / "merges.txt").write_text("#version: 0.2\nr r\n")
    assert load_family_tokenizer_encode(tmp_path) is None  # unreadable: logged, not raised


def test_the_classic_clip_files_encode_as_transformers_clip_tokenizer_does(tmp_path):
    """Reading vocab.json and merges.txt with `tokenizers` alone gives CLIPTokenizer's ids (the reference)."""
    from transformers import CLIPTokenizer

    merges = ["r r", "a j</w>", "rr aj</w>", "p h", "ph o", "o t", "ot o</w>"]
    write_clip_tokenizer(tmp_path / "tokenizer", merges)
    folder = tmp_path / "tokenizer"
    vocab = json.loads((folder / "vocab.json").read_text())
    reference = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges])
    encode = load_family_tokenizer_encode(tmp_path)
    assert encode is not None
    for text in ("rraj", "A  photo of RRAJ", "rr4j2k photo", "photo9 a", "naïve café", "sks's 42!"):
        assert encode(text) == reference.encode(text, add_special_tokens=False), text
    assert len(encode("rraj")) == 1


def test_loading_the_tokenizer_does_not_import_torch(tmp_path):
    write_clip_tokenizer(tmp_path / "tokenizer", ["r r"])
    code = (
        "import sys; from intake.triggers import load_family_tokenizer_encode as load;"
        f"encode = load({str(tmp_path)!r}); assert encode is not None and encode('rr') != [];"
        "assert not {'torch', 'transformers'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


@pytest.mark.parametrize(("class_noun", "face"), [
    ("person", True), ("woman", True), ("old man", True), ("dog", False), ("tabby cat", False),
    ("bulldog", False), ("Puppy", False), ("parrot", False), ("catherine", True),
])
def test_pets_need_no_human_face(class_noun, face):
    assert needs_face(class_noun) is face


def test_every_pet_in_the_class_noun_list_needs_no_face():
    assert [noun for noun in CLASS_NOUNS if not needs_face(noun)] == ["dog", "cat"]
