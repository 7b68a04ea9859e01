"""What other tools read from our files: PNG `parameters` (checked with the independent sd-parsers reader), A1111
sampler names, 32-bit seeds, the A1111/Civitai LoRA hash of the file A1111 loads, kohya's precalculated hashes,
`Model hash`, and deterministic safetensors headers."""

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
from storage import adapters, subjects
from storage.files import adapter_root
from storage.lora_hash import (
    NotSafetensorsError, checkpoint_short_hash, lora_hash, lora_hash_of_stored, short_lora_hash,
)
from tests.trainer.serving_fixtures import (  # noqa: F401 (fixtures)
    lora_factory, make_world, serving_models_dir, one_torch_thread, write_lora,
)
from tests.trainer.training_fixtures import make_config, subject, write_photos
from trainer.families import get_family
from trainer.serving.pngmeta import SEED_RANGE, ImageParameters, LoraUse, format_parameters, png_bytes
from trainer.serving.pngmeta import read_parameters
from trainer.serving.schedulers import A1111_SAMPLER_NAMES, choose_scheduler, default_label
from trainer.training.export import (
    adapter_metadata, export_adapter, safetensors_metadata, save_sorted, with_kohya_hashes,
)

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


# The hashes A1111 and Civitai match: computed here with hashlib and safetensors alone, never with our code.
def tensor_data_sha256(data: bytes) -> str:
    """A1111's "addnet" hash (Civitai AutoV3): SHA-256 of everything after the safetensors header."""
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()


def kohya_legacy_hash(path) -> str:
    """kohya sd-scripts' `sshs_legacy_hash`: the tensors saved with only the `ss_*` metadata, then the first 8 hex
    digits of the SHA-256 of the 64 KiB at offset 1 MiB of those bytes."""
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = {key: value for key, value in (handle.metadata() or {}).items() if key.startswith("ss_")}
    data = save(tensors, metadata=metadata)
    return hashlib.sha256(data[0x100000:0x100000 + 0x10000]).hexdigest()[:8]


def header_of(path) -> dict:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def test_kohya_hashes_match_an_independent_computation_on_a_file_over_one_mib(tmp_path):
    generator = torch.Generator().manual_seed(5)
    tensors = {"lora_unet_a.lora_down.weight": torch.randn(640, 640, generator=generator),
               "lora_unet_a.lora_up.weight": torch.randn(640, 8, generator=generator)}
    path = tmp_path / "big.safetensors"
    save_sorted(tensors, path, with_kohya_hashes(tensors, {"ss_network_dim": "8", "likeness_note": "x" * 300}))
    assert path.stat().st_size > 0x110000
    header = header_of(path)
    assert header["sshs_model_hash"] == tensor_data_sha256(path.read_bytes())
    assert header["sshs_legacy_hash"] == kohya_legacy_hash(path) != hashlib.sha256(b"").hexdigest()[:8]


def exported_adapter(tmp_path, serving_models_dir):  # noqa: F811
    """A tiny-sd15 adapter written by the product's export: the diffusers file and the kohya file."""
    family = get_family("tiny-sd15")
    pipe = family.load_pipeline(family.resolve_model_path(None, serving_models_dir), "cpu", torch.float32)

    class Captured:  # the fixture's LoRA maker hands its layers to save_lora_weights: keep them instead
        def __getattr__(self, name):
            return getattr(family, name)

        def save_lora_weights(self, folder, layers, configs):
            self.layers, self.configs = layers, configs

    captured = Captured()
    write_lora(pipe, captured, tmp_path, 3, 4, False, 0.3)
    metadata = {"rank": 4, "alpha": 4, "resolution": 64, "steps": 8, "seed": 0, "architecture": "sd15",
                "base_model": "tiny-sd15", "output_name": "likeness-rraj", "num_train_images": 4,
                "num_class_images": 4, "learning_rate": 1e-3, "tag_frequency": {"1_rraj person": {"rraj": 4}}}
    adapter, kohya, status = export_adapter(family, tmp_path / "export", captured.layers, captured.configs,
                                            metadata, 4.0)
    assert status == "written" and kohya is not None
    return adapter, kohya


def test_the_png_names_the_kohya_file_a1111_loads_with_hashes_a1111_and_civitai_compute(
        tmp_path, serving_models_dir, lora_factory):  # noqa: F811
    adapter_file, kohya_file = exported_adapter(tmp_path / "lora", serving_models_dir)
    kohya_hash, diffusers_hash = tensor_data_sha256(kohya_file.read_bytes()), tensor_data_sha256(
        adapter_file.read_bytes())
    assert kohya_hash != diffusers_hash  # different files, different tensors: the PNG must name the right one
    kohya_header, diffusers_header = header_of(kohya_file), header_of(adapter_file)
    assert kohya_header["sshs_model_hash"] == kohya_hash and kohya_header["sshs_legacy_hash"] == kohya_legacy_hash(
        kohya_file)
    assert diffusers_header["sshs_model_hash"] == diffusers_hash
    assert diffusers_header["sshs_legacy_hash"] == kohya_legacy_hash(adapter_file)
    assert kohya_header["ss_resolution"] == "(64, 64)"  # as kohya writes it

    world = make_world(tmp_path, serving_models_dir, lora_factory)
    world.user(OWNER)
    subject = subjects.create_subject(world.conn, owner_id=OWNER, trigger="rraj", trigger_key="rraj",
                                      class_noun="person", display_name="Raj", family="tiny-sd15")
    key = f"{adapter_root(OWNER, 77)}/pytorch_lora_weights.safetensors"
    world.store.import_file(adapter_file, key)
    world.store.import_file(kohya_file, key.replace("pytorch_lora_weights", "lora_kohya"))
    adapter = adapters.record_adapter(
        world.conn, owner_id=OWNER, job_id=None, family="tiny-sd15", base_model="tiny-sd15", path=key,
        sha256=hashlib.sha256(adapter_file.read_bytes()).hexdigest(), size_bytes=adapter_file.stat().st_size,
        params={}, subject_ids=[subject.id])
    _, job_id = world.queue(OWNER, "imagine", "a photo of rraj person", [(subject, adapter)])
    job = world.run(job_id)
    assert job.state == "succeeded", job.error
    png = world.store.read_bytes(job.result["outputs"][0])
    assert read_back(png).metadata["Hashes"] == {"lora:rraj": kohya_hash[:12]}
    text = read_parameters(png)
    assert f'Lora hashes: "rraj: {kohya_hash[:12]}"' in text
    assert "Model hash" not in text  # the tiny base model is a diffusers folder: A1111 has no hash for it


def test_model_hash_is_a1111s_short_hash_of_a_single_checkpoint_file_and_absent_for_a_folder(tmp_path):
    checkpoint = tmp_path / "v1-5-pruned-emaonly.safetensors"
    checkpoint.write_bytes(bytes(range(256)) * 5000)
    expected = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    assert checkpoint_short_hash(checkpoint) == expected
    assert checkpoint_short_hash(tmp_path) is None and checkpoint_short_hash("runwayml/stable-diffusion-v1-5") is None
    text = format_parameters(sample_parameters(model_hash=expected, model="v1-5-pruned-emaonly"))
    assert f"Size: 512x768, Model hash: {expected}, Model: v1-5-pruned-emaonly," in text  # A1111's order
    info = read_back(png_bytes(Image.new("RGB", (8, 8)), text))
    assert (info.samplers[0].model.name, info.samplers[0].model.hash) == ("v1-5-pruned-emaonly", expected)
