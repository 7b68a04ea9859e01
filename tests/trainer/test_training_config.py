"""Training configs: family defaults, and bad configs rejected early with clear messages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from trainer.families import FAMILY_NAMES, family_spec
from trainer.training.config import (
    PhotoSpec,
    SubjectSpec,
    TrainConfig,
    TrainConfigError,
    class_prompt_for,
    instance_prompt_for,
)


def _subjects(trigger: str = "rraj", noun: str = "person") -> list[SubjectSpec]:
    return [SubjectSpec(trigger=trigger, class_noun=noun, photos=[PhotoSpec(crop_path=Path("a.png"))])]


def _config(family: str = "tiny-sd15", **overrides) -> TrainConfig:
    base = dict(models_dir=Path("m"), output_dir=Path("o"), checkpoint_dir=Path("c"), class_cache_dir=Path("k"),
                subjects=_subjects())
    base.update(overrides)
    return TrainConfig.for_family(family, **base)


def _problems(**overrides) -> list[str]:
    with pytest.raises(TrainConfigError) as caught:
        _config(**overrides)
    assert isinstance(caught.value, ValueError)
    return caught.value.problems


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_for_family_applies_published_defaults(family):
    config = _config(family)
    defaults = family_spec(family).defaults
    assert (config.resolution, config.rank, config.learning_rate, config.steps) == (
        defaults.resolution, defaults.rank, defaults.learning_rate, defaults.steps)
    assert config.target_modules == defaults.target_modules
    assert config.quantize_base == defaults.quantize_base
    if family.startswith("tiny-"):
        assert config.model_path is None
    else:
        assert config.model_path == family_spec(family).default_model_id


def test_real_family_defaults_match_the_published_recipes():
    assert _config("sdxl").resolution == 1024 and _config("sd15").resolution == 512
    flux = _config("flux")
    assert flux.quantize_base == "nf4" and flux.resolution == 512 and flux.mixed_precision == "bf16"
    assert all(_config(f).gradient_checkpointing and _config(f).optimizer == "adamw8bit"
               for f in ("sd15", "sdxl", "flux"))


def test_overrides_win_and_config_is_frozen():
    config = _config(rank=16, steps=7, seed=3)
    assert (config.rank, config.steps, config.seed) == (16, 7, 3)
    with pytest.raises(ValidationError, match="frozen"):
        config.rank = 2


@pytest.mark.parametrize(
    ("overrides", "field", "hint"),
    [
        ({"rank": 0}, "rank", "greater than or equal to 1"),
        ({"steps": -1}, "steps", "greater than or equal to 1"),
        ({"resolution": 100}, "resolution", "multiple of 8"),
        ({"family": "sd3"}, "family", "choose one of"),
        ({"family": "sd15", "quantize_base": "nf4"}, "quantize_base", "set quantize_base to None"),
        ({"family": "tiny-flux", "train_text_encoder": True}, "train_text_encoder", "set it to False"),
        ({"family": "tiny-flux", "min_snr_gamma": 5.0}, "min_snr_gamma", "flow matching"),
        ({"family": "flux", "resolution": 520}, "resolution", "multiple of 16"),
        ({"model_path": "some/model"}, "model_path", "leave model_path empty"),
        ({"optimizer": "sgd"}, "optimizer", "adamw8bit"),
        ({"device": "gpu0"}, "device", "cuda"),
        ({"target_modules": ()}, "target_modules", "at least one module"),
        ({"subjects": []}, "subjects", "at least one subject"),
    ],
)
def test_bad_config_is_rejected_with_field_and_fix(overrides, field, hint):
    problems = _problems(**overrides)
    assert any(p.startswith(f"{field}:") and hint in p for p in problems), problems


def test_the_job_config_and_the_settings_refuse_a_bad_device_in_the_same_words():
    from storage.settings import Settings

    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, device="gpu0")
    settings_problem = caught.value.errors()[0]["msg"]
    assert settings_problem.endswith("must be auto, cpu, cuda, cuda:N or mps")
    assert any(p == "device: must be auto, cpu, cuda, cuda:N or mps" for p in _problems(device="gpu0")), \
        _problems(device="gpu0")
    assert _config(device="cuda:1").device == "cuda:1" and Settings(_env_file=None, device="mps").device == "mps"


def test_every_problem_is_reported_once_each():
    problems = _problems(rank=0, steps=-1, learning_rate=0)
    assert sorted(p.split(":")[0] for p in problems) == ["learning_rate", "rank", "steps"]
    with pytest.raises(TrainConfigError) as caught:
        _config(rank=0, steps=-1)
    assert str(caught.value).count("\n- ") == 2


def test_subject_problems():
    with pytest.raises(ValueError, match="one word"):
        SubjectSpec(trigger="two words", class_noun="person", photos=[PhotoSpec(crop_path=Path("a.png"))])
    with pytest.raises(ValueError, match="at least one photo"):
        SubjectSpec(trigger="rraj", class_noun="person", photos=[])
    twice = _subjects("rraj") + _subjects("RRAJ", "woman")
    assert any("used twice" in p for p in _problems(subjects=twice))
    assert any("equals its class noun" in p for p in _problems(subjects=_subjects("person", "person")))


def test_prompts_for_instances_and_classes():
    subject = _subjects()[0]
    assert class_prompt_for("person") == "a photo of a person"
    assert class_prompt_for("adult") == "a photo of an adult"
    assert instance_prompt_for(subject, PhotoSpec(crop_path=Path("a"))) == "a photo of rraj person"
    assert instance_prompt_for(subject, PhotoSpec(crop_path=Path("a"), caption="smiling, outdoors")) == (
        "a photo of rraj person, smiling, outdoors")
    captioned = PhotoSpec(crop_path=Path("a"), caption="rraj person  at the beach")
    assert instance_prompt_for(subject, captioned) == "rraj person at the beach"


def test_fingerprint_ignores_cadence_but_not_training_settings():
    base = _config()
    assert base.fingerprint() == _config(steps=99, checkpoint_every=3, preview_every=0).fingerprint()
    assert base.fingerprint() != _config(seed=1).fingerprint()
    assert base.fingerprint() != _config(rank=8).fingerprint()


def test_config_module_is_torch_free():
    import subprocess

    code = ("import sys; import trainer.training.config, trainer.families; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
