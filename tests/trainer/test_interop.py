"""What other tools read from our files: PNG `parameters` (checked with the independent sd-parsers reader), A1111
sampler names, 32-bit seeds, the A1111/Civitai LoRA hash, and deterministic safetensors headers."""

from __future__ import annotations

import hashlib
import io
import json
import random

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save
from sd_parsers import ParserManager

from bot.services.errors import ServiceError
from bot.services.params import SEED_LIMIT, SCHEDULERS, random_seed, sampling_options
from storage.lora_hash import NotSafetensorsError, lora_hash, lora_hash_of_stored, short_lora_hash
from tests.trainer.serving_fixtures import (  # noqa: F401 (fixtures)
    lora_factory, make_world, serving_models_dir, one_torch_thread,
)
from tests.trainer.training_fixtures import make_config, subject, write_photos
from trainer.families import get_family
from trainer.serving.pngmeta import SEED_RANGE, ImageParameters, LoraUse, format_parameters, png_bytes
from trainer.serving.pngmeta import read_parameters
from trainer.serving.schedulers import A1111_SAMPLER_NAMES, choose_scheduler, default_label
from trainer.training.export import adapter_metadata, safetensors_metadata, save_sorted

OWNER = 101
A1111_SAMPLERS = {"DDIM", "PLMS", "Euler", "Euler a", "DPM++ 2M"}  # names in A1111's own sampler list


def read_back(data: bytes):
    """sd-parsers' reading of a PNG: its A1111 parser, not ours."""
    with Image.open(io.BytesIO(data)) as image:
        info = ParserManager().parse(image)
    assert info is not None, "sd-parsers found no metadata"
    return info


def sample_parameters(**changes) -> ImageParameters:
    values = dict(
        prompt="a painting of rraj person, Van Gogh style", negative_prompt="blurry, lowres", steps=30,
        sampler="PLMS", cfg_scale=7.5, seed=SEED_RANGE - 1, width=512, height=768, model="sd15",
        loras=[LoraUse("rraj", 1.0, "ab" * 32), LoraUse("pixel art", 0.6, "cd" * 32)],
        extra={"Denoising strength": 0.35, "Card layout": "portrait"},
    )
    values.update(changes)
    return ImageParameters(**values)


def test_sd_parsers_reads_back_every_parameter():
    data = png_bytes(Image.new("RGB", (8, 8)), format_parameters(sample_parameters()))
    info = read_back(data)
    sampler = info.samplers[0]
    assert info.generator.name == "AUTOMATIC1111"
    assert info.full_prompt == "a painting of rraj person, Van Gogh style <lora:rraj:1> <lora:pixel_art:0.6>"
    assert info.full_negative_prompt == "blurry, lowres"
    assert sampler.name == "PLMS"
    assert sampler.parameters["seed"] == str(SEED_RANGE - 1) and sampler.parameters["steps"] == "30"
    assert sampler.parameters["cfg_scale"] == "7.5"
    assert sampler.model.name == "sd15"
    assert info.metadata["Size"] == "512x768"
    assert info.metadata["Hashes"] == {"lora:rraj": "ab" * 6, "lora:pixel_art": "cd" * 6}


def test_fields_come_in_a_fixed_order_whatever_order_extras_are_given_in():
    forward = sample_parameters(extra={"Denoising strength": 0.35, "Card layout": "portrait", "Zeta": 1})
    backward = sample_parameters(extra={"Zeta": 1, "Card layout": "portrait", "Denoising strength": 0.35})
    text = format_parameters(forward)
    assert text == format_parameters(backward)
    keys = [part.split(":")[0].strip() for part in text.splitlines()[-1].split(", ") if ":" in part]
    expected = ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Denoising strength", "Card layout", "Zeta",
                "Lora hashes", "Hashes", "Version"]
    assert [key for key in keys if key in expected] == expected


def test_a_lora_whose_hash_is_unknown_is_named_but_not_hashed():
    text = format_parameters(sample_parameters(loras=[LoraUse("rraj", 1.0, "")]))
    assert "<lora:rraj:1>" in text and "Lora hashes" not in text and "Hashes" not in text


@pytest.mark.parametrize("name", SCHEDULERS)
def test_sampler_names_in_metadata_are_a1111s_own(name):
    label = choose_scheduler(name, "sd15").label
    assert label in A1111_SAMPLERS and label == A1111_SAMPLER_NAMES[name]
    assert choose_scheduler(name, "flux").label == "Euler"


def test_pndm_is_written_as_plms_and_a_models_default_scheduler_gets_its_a1111_name():
    assert choose_scheduler("pndm", "sd15").label == "PLMS"
    assert default_label({"_class_name": "PNDMScheduler"}) == "PLMS"
    assert default_label({"_class_name": "EulerDiscreteScheduler"}) == "Euler"
    assert choose_scheduler(None, "sdxl", {"_class_name": "EulerDiscreteScheduler"}).label == "Euler"
    assert sampling_options("tiny-sd15", scheduler="PLMS").scheduler == "pndm"  # users may type A1111's name


def test_seeds_are_32_bit_unsigned():
    assert SEED_LIMIT == SEED_RANGE == 2**32
    assert all(0 <= random_seed() < 2**32 for _ in range(200))
    assert sampling_options("tiny-sd15", seed=2**32 - 1).seed == 2**32 - 1
    with pytest.raises(ServiceError, match="0 to 4294967295"):
        sampling_options("tiny-sd15", seed=2**32)


# LoRA hash.
def _with_header_order(data: bytes, order) -> bytes:
    """The same file with its metadata keys rewritten in another order (as safetensors itself does at random)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__")
    header = {"__metadata__": {key: metadata[key] for key in order(list(metadata))}, **header}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + length:]


@pytest.fixture
def weights():
    generator = torch.Generator().manual_seed(0)
    return {"unet.a.lora_A.weight": torch.randn(4, 8, generator=generator),
            "unet.a.lora_B.weight": torch.randn(8, 4, generator=generator)}


def test_lora_hash_covers_the_tensor_data_only(tmp_path, weights):
    metadata = {f"key{i}": str(i) for i in range(12)}
    data = save(weights, metadata=metadata)
    reordered = _with_header_order(data, lambda keys: list(reversed(sorted(keys))))
    shuffled = _with_header_order(data, lambda keys: random.Random(3).sample(keys, len(keys)))
    other_metadata = save(weights, metadata={"something": "else"})
    changed = save({**weights, "unet.a.lora_B.weight": weights["unet.a.lora_B.weight"] * 2}, metadata=metadata)
    paths = {}
    for name, blob in [("a", data), ("b", reordered), ("c", shuffled), ("d", other_metadata), ("e", changed)]:
        paths[name] = tmp_path / f"{name}.safetensors"
        paths[name].write_bytes(blob)
    assert hashlib.sha256(reordered).hexdigest() != hashlib.sha256(data).hexdigest()  # whole-file hashes differ
    hashes = {name: lora_hash(path) for name, path in paths.items()}
    assert hashes["a"] == hashes["b"] == hashes["c"] == hashes["d"] != hashes["e"]
    header_end = 8 + int.from_bytes(data[:8], "little")
    assert hashes["a"] == hashlib.sha256(data[header_end:]).hexdigest()  # A1111's "addnet" hash
    assert short_lora_hash(hashes["a"]) == hashes["a"][:12]
    assert lora_hash_of_stored(paths["a"], "f" * 64) == hashes["a"]


def test_lora_hash_refuses_a_file_that_is_not_safetensors(tmp_path):
    path = tmp_path / "fake.safetensors"
    path.write_bytes(b"adapter weights of job 1")
    with pytest.raises(NotSafetensorsError):
        lora_hash(path)


def test_saved_adapters_have_sorted_metadata_and_identical_bytes_every_time(tmp_path, weights):
    metadata = {f"key{i}": str(i) for i in (7, 3, 11, 0, 5, 9, 1)}
    first, second = tmp_path / "1.safetensors", tmp_path / "2.safetensors"
    save_sorted(weights, first, metadata)
    save_sorted(weights, second, dict(reversed(list(metadata.items()))))
    assert first.read_bytes() == second.read_bytes()
    data = first.read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    assert list(header["__metadata__"]) == sorted(metadata)
    assert (8 + int.from_bytes(data[:8], "little")) % 8 == 0
    with safe_open(str(first), framework="pt") as handle:
        assert handle.metadata() == metadata
        assert all(torch.equal(handle.get_tensor(key), value) for key, value in weights.items())


# A real generation job: the worker's PNG, read by sd-parsers.
def test_a_generated_png_is_read_back_by_sd_parsers(tmp_path, serving_models_dir, lora_factory):  # noqa: F811
    world = make_world(tmp_path, serving_models_dir, lora_factory)
    subject, adapter = world.subject_with_adapter(OWNER, "rraj", seed=1)
    _, job_id = world.queue(OWNER, "imagine", "a photo of rraj person", [(subject, adapter)], seed=2**32 - 2,
                            negative="blurry", count=2, scheduler="pndm", width=64, height=48, guidance=6.5)
    job = world.run(job_id)
    assert job.state == "succeeded", job.error
    first, second = (world.store.read_bytes(key) for key in job.result["outputs"])
    info = read_back(first)
    sampler = info.samplers[0]
    assert info.full_prompt == "a photo of rraj person <lora:rraj:1>" and info.full_negative_prompt == "blurry"
    assert sampler.name == "PLMS" and sampler.model.name == "tiny-sd15"
    assert (sampler.parameters["seed"], sampler.parameters["steps"], sampler.parameters["cfg_scale"]) == (
        str(2**32 - 2), "2", "6.5")
    assert info.metadata["Size"] == "64x48"
    expected = short_lora_hash(lora_hash(world.store.resolve(adapter.path)))
    assert info.metadata["Hashes"] == {"lora:rraj": expected}
    assert f'Lora hashes: "rraj: {expected}"' in read_parameters(first)
    assert read_back(second).samplers[0].parameters["seed"] == str(2**32 - 1)  # seed + 1, still 32-bit


# The exported kohya file's `ss_*` keys.
def test_kohya_metadata_names_the_output_images_learning_rate_and_tags_with_the_trigger(tmp_path):
    write_photos(tmp_path, "subject-a", count=3, seed=1)
    write_photos(tmp_path, "subject-b", count=2, seed=2)
    rraj = subject(tmp_path, captions=["smiling, red scarf", "", "rraj person at the beach, smiling"])
    ssam = subject(tmp_path, "subject-b", trigger="ssam", noun="woman")
    config = make_config("tiny-sd15", tmp_path / "job", tmp_path / "models", tmp_path / "class", [rraj, ssam],
                         learning_rate=2e-4)
    header = safetensors_metadata(adapter_metadata(config, get_family("tiny-sd15"), 8, "adamw"))
    assert header["ss_output_name"] == "likeness-rraj-ssam"
    assert header["ss_num_train_images"] == "5" and header["ss_num_reg_images"] == str(config.num_class_images)
    assert float(header["ss_learning_rate"]) == 2e-4
    assert json.loads(header["ss_tag_frequency"]) == {
        "1_rraj person": {"rraj": 3, "person": 3, "smiling": 2, "red scarf": 1, "rraj person at the beach": 1},
        "1_ssam woman": {"ssam": 2, "woman": 2},
    }
    assert all(isinstance(value, str) for value in header.values())
