"""Photos, batch composition, the DreamBooth loss split and the shared class-image cache."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tests.trainer.training_fixtures import (  # noqa: F401  (session fixtures)
    make_config,
    models_dir,
    photo_dir,
    shared_class_cache,
    subject,
)
from trainer.families import get_family
from trainer.training import run as run_module
from trainer.training.batches import TrainingDataset
from trainer.training.class_images import ensure_class_images
from trainer.training.data import load_class_set, load_instance_examples, plan_batch
from trainer.training.errors import TrainingError
from trainer.training.loop import combine_losses
from trainer.training.run import train_adapter


def _forbid_model_loading(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a model was loaded before the photos were checked")

    monkeypatch.setattr(run_module, "get_family", fail)


@pytest.mark.parametrize("damage", ["missing", "corrupt", "truncated"])
def test_bad_photo_fails_before_any_model_loads(tmp_path, photo_dir, models_dir, shared_class_cache,  # noqa: F811
                                                monkeypatch, damage):
    import shutil

    job_photos = tmp_path / "photos"
    shutil.copytree(photo_dir, job_photos)
    victim = job_photos / "subject-a-1.png"
    config = make_config("tiny-sd15", tmp_path, models_dir, shared_class_cache, [subject(job_photos)])
    if damage == "missing":
        victim.unlink()
    elif damage == "corrupt":
        victim.write_bytes(b"this is not an image")
    else:
        victim.write_bytes(victim.read_bytes()[:200])
    _forbid_model_loading(monkeypatch)
    with pytest.raises(TrainingError) as caught:
        train_adapter(config)
    assert caught.value.code == "bad_photo"
    assert "photo 2 of rraj (subject-a-1.png)" in caught.value.message
    assert caught.value.suggestion


def test_photos_become_square_examples_with_their_prompts(tmp_path, photo_dir, models_dir,  # noqa: F811
                                                         shared_class_cache):  # noqa: F811
    spec = subject(photo_dir, captions=["smiling", "", "rraj person in a hat"])
    config = make_config("tiny-sd15", tmp_path, models_dir, shared_class_cache, [spec])
    examples = load_instance_examples(config)
    assert [e.prompt for e in examples] == [
        "a photo of rraj person, smiling", "a photo of rraj person", "rraj person in a hat"]
    image = examples[0].image
    assert image.pixels.shape == (3, 64, 64)
    assert -1.0 <= float(image.pixels.min()) and float(image.pixels.max()) <= 1.0
    assert image.original_size == (96, 80)  # (height, width) of the photo before resizing


def test_batch_plan_is_a_pure_function_of_seed_and_step():
    nouns = ["person"] * 5
    sizes = {"person": 7}
    assert plan_batch(3, 42, 2, nouns, sizes) == plan_batch(3, 42, 2, nouns, sizes)
    assert plan_batch(3, 42, 2, nouns, sizes) != plan_batch(3, 43, 2, nouns, sizes)
    # Every photo is seen exactly once per epoch.
    first_epoch = [i for step in range(5) for i in plan_batch(step, 42, 1, nouns, sizes).instance_indices]
    assert sorted(first_epoch) == [0, 1, 2, 3, 4]
    assert plan_batch(0, 42, 1, nouns, None).class_picks == []


def test_family_adapter_pairs_each_photo_with_its_own_class(tmp_path, photo_dir, models_dir,  # noqa: F811
                                                           shared_class_cache):  # noqa: F811
    nouns = ["man"] * 3 + ["woman"] * 2
    sizes = {"man": 4, "woman": 3}
    for step in range(10):
        plan = plan_batch(step, 0, 2, nouns, sizes)
        for index, (noun, pick) in zip(plan.instance_indices, plan.class_picks, strict=True):
            assert noun == nouns[index] and 0 <= pick < sizes[noun]


@pytest.fixture(scope="module")
def sd15_pipeline(models_dir):  # noqa: F811
    family = get_family("tiny-sd15")
    return family, family.load_pipeline(family.resolve_model_path(None, models_dir), "cpu", torch.float32)


def test_prior_preservation_batch_is_instance_then_class(tmp_path, photo_dir, models_dir,  # noqa: F811
                                                         shared_class_cache, sd15_pipeline):  # noqa: F811
    family, pipe = sd15_pipeline
    subjects = [subject(photo_dir, "subject-a", "rraj", "man"), subject(photo_dir, "subject-b", "ssam", "woman")]
    config = make_config("tiny-sd15", tmp_path, models_dir, shared_class_cache, subjects, batch_size=2)
    class_sets = {}
    for noun, count in (("man", 3), ("woman", 2)):
        paths, _ = ensure_class_images(family, None, models_dir, shared_class_cache, f"a photo of a {noun}",
                                       64, count, 0, "cpu", pipeline=pipe)
        class_sets[noun] = load_class_set(noun, paths, 64)
    dataset = TrainingDataset(family, pipe, config, load_instance_examples(config), class_sets,
                              torch.device("cpu"), torch.float32)
    dataset.cache_latents()
    dataset.cache_text_embeddings()
    seen = Counter()
    for step in range(6):
        batch = dataset.batch(step)
        plan = dataset.plan(step)
        assert batch.num_instance == 2 and batch.latents.shape == (4, 4, 32, 32)
        instance_prompts, class_prompts = batch.prompts[:2], batch.prompts[2:]
        for index, prompt, class_prompt in zip(plan.instance_indices, instance_prompts, class_prompts, strict=True):
            trigger, noun = ("rraj", "man") if index < 3 else ("ssam", "woman")
            assert prompt == f"a photo of {trigger} {noun}"
            assert class_prompt == f"a photo of a {noun}"
            seen[noun] += 1
        expected = torch.cat([dataset.embeds["prompt_embeds"][dataset.prompts.index(p)][None] for p in batch.prompts])
        assert torch.equal(batch.cond["prompt_embeds"], expected)
    assert seen["man"] and seen["woman"]
    assert torch.equal(dataset.batch(4).latents, dataset.batch(4).latents)  # replayable


def test_loss_is_instance_plus_weighted_prior():
    per_example = torch.tensor([1.0, 3.0, 10.0, 20.0])
    total, instance, prior = combine_losses(per_example, 2, 0.5)
    assert instance.item() == 2.0 and prior.item() == 15.0
    assert total.item() == pytest.approx(2.0 + 0.5 * 15.0)
    total, instance, prior = combine_losses(per_example[:2], 2, 0.5)
    assert prior is None and total.item() == 2.0


def test_class_image_cache_is_reused_and_refilled(tmp_path, models_dir, sd15_pipeline):  # noqa: F811
    family, pipe = sd15_pipeline
    cache = tmp_path / "cache"
    paths, generated = ensure_class_images("tiny-sd15", None, models_dir, cache, "a photo of a person", 64, 3, 0,
                                           "cpu", pipeline=pipe)
    assert generated == 3 and all(p.is_file() for p in paths)
    again, generated_again = ensure_class_images("tiny-sd15", None, models_dir, cache, "a photo of a person", 64,
                                                 3, 0, "cpu")  # no pipeline: must not need one
    assert generated_again == 0 and again == paths
    before = paths[0].read_bytes()
    paths[1].write_bytes(b"half a png")  # a damaged file is regenerated, the rest kept
    _, refilled = ensure_class_images(family, None, models_dir, cache, "a photo of a person", 64, 3, 0, "cpu",
                                      pipeline=pipe)
    assert refilled == 1 and paths[0].read_bytes() == before
    other, generated_other = ensure_class_images(family, None, models_dir, cache, "a photo of a person", 64, 4, 0,
                                                 "cpu", pipeline=pipe)
    assert generated_other == 1 and other[:3] == paths  # asking for more only adds the missing ones
    assert not [p for p in cache.rglob("*") if ".tmp-" in p.name]  # no temp file left behind
    different_key = ensure_class_images(family, None, models_dir, cache, "a photo of a woman", 64, 1, 0, "cpu",
                                        pipeline=pipe)[0]
    assert different_key[0].parent != paths[0].parent
