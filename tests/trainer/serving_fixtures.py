"""Shared helpers for the serving tests (import explicitly; conftest.py belongs to others).

LoRA files are made the way the trainer makes them (peft LoRA on the denoiser's attention, saved through the
pipeline's `save_lora_weights`), with seeded random B matrices so that each adapter visibly changes the output.
The storage world is a real SQLite database and file store in a temp data dir whose models/ folder points at one
session-wide tiny-model folder, so each tiny model is built once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from PIL import Image

from storage import adapters, consent, generations, jobs, subjects
from storage.files import FileStore, adapter_root, sha256_file
from storage.settings import Settings
from trainer.families import get_family
from trainer.worker import Worker

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@pytest.fixture(scope="session")
def serving_models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serving-models")


@pytest.fixture(scope="session")
def lora_factory(serving_models_dir, tmp_path_factory):
    """lora_factory(seed, family="tiny-sd15", rank=4, text_encoder=False) -> path of a LoRA file."""
    folder = tmp_path_factory.mktemp("loras")
    pipes: dict[str, object] = {}

    def make(seed: int, family: str = "tiny-sd15", rank: int = 4, text_encoder: bool = False,
             strength: float = 0.3) -> Path:
        fam = get_family(family)
        if family not in pipes:
            pipes[family] = fam.load_pipeline(fam.resolve_model_path(None, serving_models_dir), "cpu", torch.float32)
        path = folder / f"{family}-{seed}-{rank}-{int(text_encoder)}"
        if not (path / "pytorch_lora_weights.safetensors").exists():
            write_lora(pipes[family], fam, path, seed, rank, text_encoder, strength)
        return path / "pytorch_lora_weights.safetensors"

    return make


def write_lora(pipe, family, folder: Path, seed: int, rank: int, text_encoder: bool, strength: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    modules = {family.denoiser_name: family.denoiser(pipe)}
    if text_encoder:
        modules["text_encoder"] = pipe.text_encoder
    layers, metadata = {}, {}
    for name, module in modules.items():
        targets = TARGETS if name == family.denoiser_name else ["q_proj", "k_proj", "v_proj", "out_proj"]
        config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets)
        module.add_adapter(config, adapter_name="fixture")
        for key, param in module.named_parameters():
            if "lora_" in key and ".fixture" in key:
                param.data = torch.randn(param.shape, generator=generator) * strength
        layers[name] = get_peft_model_state_dict(module, adapter_name="fixture")
        metadata[name] = config.to_dict()
        if hasattr(module, "delete_adapters"):  # diffusers models
            module.delete_adapters("fixture")
        else:  # transformers text encoders
            module.delete_adapter("fixture")
    family.save_lora_weights(folder, layers, metadata)


def astronaut_pair() -> Image.Image:
    """Two real faces side by side (scikit-image's astronaut photo, twice)."""
    from skimage import data

    face = Image.fromarray(data.astronaut()).resize((256, 256), Image.Resampling.LANCZOS)
    pair = Image.new("RGB", (512, 256))
    pair.paste(face, (0, 0))
    pair.paste(face, (256, 0))
    return pair


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@dataclass
class World:
    """A real storage database, file store and worker, with users, subjects and adapters made on demand."""

    settings: Settings
    worker: Worker
    lora_factory: object
    next_job: int = 1
    triggers: dict[int, str] = field(default_factory=dict)

    @property
    def conn(self):
        return self.worker.conn

    @property
    def store(self) -> FileStore:
        return self.worker.store

    def user(self, user_id: int) -> int:
        subjects.ensure_user(self.conn, user_id, f"user{user_id}")
        return user_id

    def subject_with_adapter(self, owner: int, trigger: str, seed: int, noun: str = "person"):
        self.user(owner)
        subject = subjects.create_subject(self.conn, owner_id=owner, trigger=trigger, trigger_key=trigger,
                                          class_noun=noun, display_name=trigger.title(), family="tiny-sd15")
        adapter = self.adapter_for(owner, [subject.id], seed)
        return subject, adapter

    def adapter_for(self, owner: int, subject_ids: list[int], seed: int):
        source = self.lora_factory(seed)
        key = f"{adapter_root(owner, 1000 + self.next_job)}/pytorch_lora_weights.safetensors"
        self.next_job += 1
        self.store.import_file(source, key)
        return adapters.record_adapter(
            self.conn, owner_id=owner, job_id=None, family="tiny-sd15", base_model="tiny-sd15", path=key,
            sha256=sha256_file(source), size_bytes=source.stat().st_size, params={}, subject_ids=subject_ids,
        )

    def share(self, subject_id: int, user_id: int) -> None:
        self.user(user_id)
        consent.grant_access(self.conn, subject_id, user_id=user_id)

    def queue(self, user_id: int, kind: str, prompt: str, people=(), *, seed: int = 7, parent_id=None,
              negative: str = "", **params) -> tuple[int, int]:
        """Create a generations row plus its `generate` job; returns (generation id, job id)."""
        base = {"width": 64, "height": 64, "steps": 2, "guidance": 5.0, "scheduler": "euler", "count": 1,
                "style": None, "strength": None, "source_index": None, "scale": None, "headshot_prompts": None,
                "greeting": None, "layout": None, "aspect": "square"}
        base.update(params)
        self.user(user_id)
        entries = [{"kind": "subject", "subject_id": s.id, "adapter_id": a.id, "trigger": s.trigger, "weight": 1.0}
                   for s, a in people]
        gen_id = generations.create_generation(
            self.conn, user_id=user_id, kind=kind, prompt=prompt, negative_prompt=negative, seed=seed, params=base,
            adapters=entries, subject_ids=[s.id for s, _ in people], parent_id=parent_id,
        )
        job_id = jobs.enqueue_job(self.conn, "generate", {"generation_id": gen_id}, user_id=user_id)
        generations.attach_job(self.conn, gen_id, job_id)
        return gen_id, job_id

    def run(self, job_id: int) -> jobs.Job:
        self.worker.run(until_idle=True)
        return jobs.get_job(self.conn, job_id)


def make_world(tmp_path: Path, models_dir: Path, lora_factory, **settings) -> World:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(models_dir, target_is_directory=True)
    config = Settings(data_dir=data_dir, model_family="tiny-sd15", worker_lease_s=30.0, worker_poll_s=0.05,
                      device="cpu", **settings)
    from trainer.serving.job import class_images_job, run_generation_job

    worker = Worker(config, {"generate": run_generation_job, "class_images": class_images_job}, owner="test-worker")
    return World(config, worker, lora_factory)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny-model ops are too small to gain from threads; on a busy 2-core machine threads only spin on each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
