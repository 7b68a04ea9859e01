"""What a training job asks for, validated before anything is loaded. Torch-free.

`TrainConfig(family=..., ...)` fills every field it is not given from the family's published
defaults (see intake/family_specs.py); `TrainConfig.for_family(name, **overrides)` says the same
thing explicitly. Any problem raises `TrainConfigError`, whose message has one line per problem,
naming the field and the fix.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from intake.family_specs import FAMILY_NAMES, SPECS, FamilySpec
from storage.settings import check_device

_TRIGGER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_NOUN = re.compile(r"^[A-Za-z][A-Za-z -]{0,63}$")
# Fields that take the family's default when not given (name in TrainConfig -> FamilyDefaults).
_DEFAULTED = (
    "resolution", "steps", "learning_rate", "rank", "alpha", "target_modules", "gradient_checkpointing",
    "optimizer", "quantize_base", "mixed_precision", "num_class_images", "prior_loss_weight",
    "checkpoint_every", "preview_every", "batch_size",
)


class TrainConfigError(ValueError):
    """A training configuration that cannot run; `problems` has one 'field: what and how to fix' each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("Invalid training configuration:\n" + "\n".join(f"- {p}" for p in self.problems))

    @classmethod
    def from_validation_error(cls, error: ValidationError) -> TrainConfigError:
        problems = []
        for item in error.errors():
            message = str(item["msg"]).removeprefix("Value error, ")
            field = ".".join(str(part) for part in item["loc"])
            if field:
                problems.append(f"{field}: {message}")
            else:  # cross-field checks report "field: message" lines themselves
                problems.extend(line for line in message.splitlines() if line)
        return cls(problems)


class PhotoSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    crop_path: Path
    caption: str = ""


class SubjectSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    trigger: str
    class_noun: str
    photos: list[PhotoSpec]

    @field_validator("trigger")
    @classmethod
    def _trigger_is_one_word(cls, value: str) -> str:
        if not _TRIGGER.match(value):
            raise ValueError("must be one word of letters, digits, '-' or '_' (e.g. 'rraj')")
        return value

    @field_validator("class_noun")
    @classmethod
    def _noun_is_plain(cls, value: str) -> str:
        value = " ".join(value.split())
        if not _NOUN.match(value):
            raise ValueError("must be a plain noun such as 'person', 'man' or 'woman'")
        return value

    @field_validator("photos")
    @classmethod
    def _has_photos(cls, value: list[PhotoSpec]) -> list[PhotoSpec]:
        if not value:
            raise ValueError("needs at least one photo (5 to 20 work best)")
        return value


def class_prompt_for(class_noun: str) -> str:
    """The prior-preservation prompt for a class noun, e.g. 'a photo of a person'."""
    article = "an" if class_noun[:1].lower() in "aeiou" else "a"
    return f"a photo of {article} {class_noun}"


def subject_prompt_for(subject: SubjectSpec) -> str:
    """The plain instance prompt, e.g. 'a photo of rraj person'."""
    return f"a photo of {subject.trigger} {subject.class_noun}"


def instance_prompt_for(subject: SubjectSpec, photo: PhotoSpec) -> str:
    """A photo's training prompt: its caption if that names the trigger, else the plain prompt
    followed by the caption."""
    caption = " ".join(photo.caption.split())
    if not caption:
        return subject_prompt_for(subject)
    if re.search(rf"\b{re.escape(subject.trigger)}\b", caption, flags=re.IGNORECASE):
        return caption
    return f"{subject_prompt_for(subject)}, {caption}"


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str
    model_path: str | None = None  # hub id or local folder; None: tiny model, or the family's default
    models_dir: Path
    output_dir: Path
    checkpoint_dir: Path
    class_cache_dir: Path
    subjects: list[SubjectSpec]
    resolution: int = Field(ge=64, le=2048)
    steps: int = Field(ge=1, le=100_000)
    learning_rate: float = Field(gt=0, le=0.1)
    rank: int = Field(ge=1, le=256)
    alpha: float = Field(gt=0, le=1024)
    target_modules: tuple[str, ...]
    train_text_encoder: bool = False
    prior_preservation: bool = True
    prior_loss_weight: float = Field(ge=0, le=10)
    num_class_images: int = Field(ge=1, le=5000)
    min_snr_gamma: float | None = Field(default=None, gt=0, le=100)
    seed: int = Field(default=0, ge=0, lt=2**63)
    gradient_checkpointing: bool
    optimizer: Literal["adamw8bit", "adamw"]
    quantize_base: Literal["nf4"] | None
    mixed_precision: Literal["no", "fp16", "bf16"]
    cache_latents: bool = True
    cache_text_embeddings: bool = True
    offload_frozen_after_caching: bool = True
    checkpoint_every: int = Field(ge=0)  # 0: only on shutdown
    preview_every: int = Field(ge=0)  # 0: no previews
    batch_size: int = Field(ge=1, le=64)
    device: str = "auto"

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise TrainConfigError.from_validation_error(error) from None

    @classmethod
    def for_family(cls, family: str, **overrides) -> TrainConfig:
        """A config with `family`'s published defaults, changed by `overrides`."""
        return cls(family=family, **overrides)

    @model_validator(mode="before")
    @classmethod
    def _fill_family_defaults(cls, data):
        if not isinstance(data, dict) or "family" not in data:
            return data
        spec = SPECS.get(data["family"])
        if spec is None:
            raise ValueError(f"family: unknown family {data['family']!r}; choose one of {', '.join(FAMILY_NAMES)}")
        filled = dict(data)
        for name in _DEFAULTED:
            filled.setdefault(name, getattr(spec.defaults, name))
        if not spec.tiny and filled.get("model_path") is None:
            filled["model_path"] = spec.default_model_id
        return filled

    @field_validator("quantize_base", mode="before")
    @classmethod
    def _none_spelled_out(cls, value):
        return None if isinstance(value, str) and value.lower() in ("", "none", "no") else value

    @field_validator("target_modules")
    @classmethod
    def _targets_named(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not name.strip() for name in value):
            raise ValueError("name at least one module, e.g. ('to_q', 'to_k', 'to_v', 'to_out.0')")
        return value

    @field_validator("subjects")
    @classmethod
    def _has_subjects(cls, value: list[SubjectSpec]) -> list[SubjectSpec]:
        if not value:
            raise ValueError("train at least one subject")
        return value

    @field_validator("device")
    @classmethod
    def _device_known(cls, value: str) -> str:
        return check_device(value)

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        spec = SPECS[self.family]
        problems = _family_problems(self, spec) + _subject_problems(self.subjects)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # ------------------------------------------------------------------ helpers

    @property
    def spec(self) -> FamilySpec:
        return SPECS[self.family]

    def triggers(self) -> list[str]:
        return [s.trigger for s in self.subjects]

    def class_nouns(self) -> list[str]:
        """Distinct class nouns in subject order."""
        return list(dict.fromkeys(s.class_noun for s in self.subjects))

    def fingerprint(self) -> str:
        """Hash of everything that shapes the trained weights; a checkpoint resumes only on a match.

        Steps, checkpoint/preview cadence and the device may change between runs.
        """
        fields = self.model_dump(
            mode="json",
            exclude={"steps", "checkpoint_every", "preview_every", "device", "output_dir", "checkpoint_dir",
                     "offload_frozen_after_caching", "models_dir", "class_cache_dir"},
        )
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _family_problems(config: TrainConfig, spec: FamilySpec) -> list[str]:
    problems = []
    if spec.tiny and config.model_path is not None:
        problems.append("model_path: tiny models are built locally; leave model_path empty")
    if config.resolution % spec.resolution_multiple:
        nearest = round(config.resolution / spec.resolution_multiple) * spec.resolution_multiple
        problems.append(
            f"resolution: must be a multiple of {spec.resolution_multiple} for {spec.name} (e.g. {max(nearest, 64)})"
        )
    if config.quantize_base == "nf4" and not spec.supports_nf4:
        problems.append(
            f"quantize_base: NF4 is offered for sdxl and flux; {spec.name} trains in under 6 GB without it, "
            "so set quantize_base to None"
        )
    if config.train_text_encoder and not spec.supports_text_encoder_lora:
        problems.append(
            f"train_text_encoder: {spec.name} trains LoRA on the transformer only (text-encoder LoRA is for "
            "sd15 and sdxl); set it to False"
        )
    if config.min_snr_gamma is not None and not spec.supports_min_snr:
        problems.append(
            "min_snr_gamma: min-SNR weighting is for noise-prediction models (sd15, sdxl); FLUX trains with "
            "flow matching, so leave it None"
        )
    return problems


def _subject_problems(subjects: list[SubjectSpec]) -> list[str]:
    problems = []
    seen: set[str] = set()
    for subject in subjects:
        key = subject.trigger.lower()
        if key in seen:
            problems.append(f"subjects: trigger {subject.trigger!r} is used twice; give each subject its own")
        seen.add(key)
        if key == subject.class_noun.lower():
            problems.append(
                f"subjects: trigger {subject.trigger!r} equals its class noun; pick a rare word such as 'rraj'"
            )
    return problems
