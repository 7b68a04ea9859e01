"""PNG metadata, grids and contact sheets, safety, and the multi-person face refine mechanics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from storage.settings import Settings
from tests.trainer.serving_fixtures import (  # noqa: F401 (fixtures)
    astronaut_pair, lora_factory, serving_models_dir, one_torch_thread,
)
from intake.faces import FaceBox
from trainer.serving.adapter_cache import AdapterSource
from trainer.serving.multi_person import assign_faces, person_prompt, refine_faces
from trainer.serving.pngmeta import ImageParameters, LoraUse, format_parameters, parse_parameters, png_bytes
from trainer.serving.pngmeta import read_parameters
from trainer.serving.requests import Person
from intake.captions import blocked_word
from trainer.serving.safety import NsfwFilter
from trainer.serving.server import GenerationServer, Sampling
from trainer.serving.sheets import grid_shape, make_contact_sheet, make_grid


# PNG metadata.
def test_parameters_chunk_round_trips_through_pillow():
    params = ImageParameters(
        prompt="a painting of rraj person, Van Gogh style\nstarry night", negative_prompt="blurry, lowres",
        steps=30, sampler="DPM++ 2M", cfg_scale=7.5, seed=2**32 - 5, width=512, height=768, model="sd15",
        loras=[LoraUse("rraj", 1.0, "ab" * 32), LoraUse("pixel art", 0.6, "cd" * 32)],
        extra={"Denoising strength": 0.35, "Card layout": "portrait"},
    )
    data = png_bytes(Image.new("RGB", (8, 8)), format_parameters(params))
    text = read_parameters(data)
    parsed = parse_parameters(text)
    assert parsed["Prompt"].startswith("a painting of rraj person, Van Gogh style\nstarry night")
    assert "<lora:rraj:1>" in parsed["Prompt"] and "<lora:pixel_art:0.6>" in parsed["Prompt"]
    assert parsed["Negative prompt"] == "blurry, lowres"
    assert parsed["Steps"] == "30" and parsed["Sampler"] == "DPM++ 2M" and parsed["CFG scale"] == "7.5"
    assert parsed["Seed"] == str(2**32 - 5) and parsed["Size"] == "512x768" and parsed["Model"] == "sd15"
    assert parsed["Denoising strength"] == "0.35"
    assert parsed["Lora hashes"] == f"rraj: {'ab' * 6}, pixel_art: {'cd' * 6}"
    assert json.loads(parsed["Hashes"]) == {"lora:rraj": "ab" * 6, "lora:pixel_art": "cd" * 6}


def test_non_latin_prompts_are_kept_exactly():
    params = ImageParameters("ein Bild von rraj person \u2764 \u65e5\u672c", "", 4, "Euler", 5.0, 1, 64, 64, "tiny")
    assert parse_parameters(read_parameters(png_bytes(Image.new("RGB", (8, 8)), format_parameters(params))))[
        "Prompt"] == "ein Bild von rraj person \u2764 \u65e5\u672c"


# Grids and sheets.
@pytest.mark.parametrize("count, shape", [(1, (1, 1)), (2, (2, 1)), (3, (3, 1)), (4, (2, 2)), (8, (3, 3))])
def test_grid_shapes(count, shape):
    assert grid_shape(count) == shape


def test_grid_places_images_left_to_right_then_down():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    grid = np.asarray(make_grid([Image.new("RGB", (10, 20), c) for c in colours], gap=2))
    assert grid.shape == (42, 22, 3)
    assert tuple(grid[5, 5]) == colours[0] and tuple(grid[5, 17]) == colours[1]
    assert tuple(grid[30, 5]) == colours[2] and tuple(grid[30, 17]) == colours[3]


def test_contact_sheet_has_a_label_under_each_thumbnail():
    images = [Image.new("RGB", (48, 64), (90, 140, 200)) for _ in range(3)]
    blank = np.asarray(make_contact_sheet(images, ["", "", ""], "Headshots"))
    labelled = np.asarray(make_contact_sheet(images, ["studio grey", "office window", "outdoor bokeh"], "Headshots"))
    assert labelled.shape == blank.shape and labelled.shape[1] > 3 * 256
    dark = lambda sheet: (sheet.astype(int).sum(axis=2) < 300).sum()  # noqa: E731 (thumbnails are light)
    assert dark(labelled) > dark(blank) + 200


# Cards: tests/trainer/test_cards.py.


# Safety.
def test_blocklist_matches_whole_words_through_case_and_invisible_characters():
    assert blocked_word(["A Zom\u200bbie walks"], ["zombie"]) == "zombie"
    assert blocked_word(["zombies"], ["zombie"]) is None
    assert blocked_word(["red", "blood moon"], ["blood moon"]) == "blood moon"
    assert blocked_word(["fine"], []) is None


def tiny_safety_checker(folder, flag_everything: bool):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    checker = StableDiffusionSafetyChecker(config)
    threshold = -10.0 if flag_everything else 10.0  # cosine similarity is in [-1, 1]
    checker.concept_embeds_weights.data.fill_(threshold)
    checker.special_care_embeds_weights.data.fill_(10.0)
    checker.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("flag_everything", [True, False])
def test_nsfw_filter_runs_on_local_weights_only(tmp_path, flag_everything):
    folder = tiny_safety_checker(tmp_path / "checker", flag_everything)
    images = [Image.new("RGB", (64, 64), (200, 150, 120)), Image.new("RGB", (96, 64), (10, 10, 10))]
    assert NsfwFilter.load(folder, torch.device("cpu")).flags(images) == [flag_everything] * 2

    assert NsfwFilter.from_settings(Settings(safety_checker_path=tmp_path / "absent"), "cpu") is None
    assert NsfwFilter.from_settings(Settings(), "cpu") is None


# Multi-person.
def person(subject_id: int, trigger: str, source: AdapterSource) -> Person:
    return Person(subject_id, trigger, f"{trigger} person", source, 1.0)


def test_faces_are_assigned_left_to_right_in_prompt_order():
    people = [person(1, "aaa", None), person(2, "bbb", None)]
    right, left, tiny = FaceBox(300, 40, 80, 80), FaceBox(20, 60, 90, 90), FaceBox(200, 200, 10, 10)
    assert assign_faces([right, tiny, left], people) == [(people[0], left), (people[1], right)]
    assert assign_faces([right], people) == []


def test_person_prompt_names_only_that_person():
    people = [person(1, "rraj", None), person(2, "ssam", None)]
    text = person_prompt(people[0], "rraj person and ssam person skiing, oil painting", people)
    assert "rraj person" in text and "ssam" not in text and "skiing" in text


def test_each_face_is_redrawn_with_only_its_own_adapter(tmp_path, serving_models_dir, lora_factory):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(serving_models_dir, target_is_directory=True)
    runtime = GenerationServer(Settings(data_dir=data, device="cpu")).runtime()
    people = [person(1, "aaa", AdapterSource("a", lora_factory(1), adapter_id=1)),
              person(2, "bbb", AdapterSource("b", lora_factory(2), adapter_id=2))]
    runtime.use_adapters([(p.source, 1.0) for p in people])  # the composed state
    composed = astronaut_pair()
    seen: list[list[str]] = []
    sampling = Sampling("aaa person and bbb person at a party", "", 512, 256, 2, 5.0, 11, "euler")
    result = refine_faces(runtime, composed, people, sampling,
                          on_step=lambda pipe, step: seen.append(sorted(pipe.get_active_adapters())))
    assert not result.warnings
    assert [a.person.subject_id for a in result.assignments] == [1, 2]
    first, second = (a.face for a in result.assignments)
    assert first.center[0] < 256 <= second.center[0]  # the left face went to the first person named
    names = [runtime.adapters.name_of(k) for k in ("a", "b")]
    assert seen and seen[: len(seen) // 2] == [[names[0]]] * (len(seen) // 2)
    assert seen[len(seen) // 2:] == [[names[1]]] * (len(seen) - len(seen) // 2)
    before, after = np.asarray(composed).astype(int), np.asarray(result.image).astype(int)
    changed = np.abs(after - before).sum(axis=2) > 0
    inside = np.zeros_like(changed)
    for assignment in result.assignments:
        crop = assignment.crop
        inside[crop.y:crop.bottom, crop.x:crop.right] = True
        face = assignment.face
        assert changed[face.y:face.bottom, face.x:face.right].mean() > 0.5
    assert not changed[~inside].any()  # nothing outside the face crops moved


def test_too_few_faces_keeps_the_composed_picture_with_a_warning(tmp_path, serving_models_dir,
                                                                  lora_factory):  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(serving_models_dir, target_is_directory=True)
    runtime = GenerationServer(Settings(data_dir=data, device="cpu")).runtime()
    people = [person(1, "aaa", AdapterSource("a", lora_factory(1))),
              person(2, "bbb", AdapterSource("b", lora_factory(2)))]
    plain = Image.new("RGB", (128, 128), (120, 120, 120))
    result = refine_faces(runtime, plain, people, Sampling("x", "", 128, 128, 2, 5.0, 1))
    assert np.array_equal(np.asarray(result.image), np.asarray(plain))
    assert result.assignments == [] and "0 of the 2 faces" in result.warnings[0]
