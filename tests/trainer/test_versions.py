"""The worker's version check against the lock, and dependency errors named as what they are."""

from __future__ import annotations

from importlib import metadata
from types import SimpleNamespace

import pytest

from trainer.training.errors import TrainingError
from trainer.training.run import _add_adapters
from trainer.versions import FIX, dependency_problem, drift_warning, lock_file

# What transformers 5.24 raises from add_adapter with peft 0.21.
TRANSFORMERS_PEFT_ERROR = "The version of PEFT you are using is not compatible, please use a version >= 0.22.0"


def test_the_locked_environment_gives_no_warning():
    assert lock_file() is not None
    assert drift_warning() is None


def test_a_differing_library_gets_one_line_naming_it(tmp_path):
    lock = tmp_path / "cpu.lock"
    lock.write_text(lock_file().read_text().replace(f"diffusers=={metadata.version('diffusers')}",
                                                    "diffusers==0.1.0"))
    warning = drift_warning(lock)
    assert warning == (f"installed model libraries differ from the lock: diffusers {metadata.version('diffusers')} "
                       f"(lock: 0.1.0). {FIX}")
    assert "\n" not in warning


def test_the_peft_version_error_names_package_versions_and_fix():
    problem = dependency_problem(ValueError(TRANSFORMERS_PEFT_ERROR))
    assert problem == (f"The installed peft {metadata.version('peft')} does not fit transformers "
                       f"{metadata.version('transformers')}, which needs peft >= 0.22.0. {FIX}")


def test_a_version_stated_in_words_is_quoted():
    problem = dependency_problem(ValueError("this peft is too old, use a version greater than 0.30.1"))
    assert problem is not None and "needs peft newer than 0.30.1" in problem


def test_a_specifier_in_the_message_is_quoted():
    problem = dependency_problem(ImportError("bitsandbytes>=0.99.0 is required for 4-bit layers"))
    assert problem is not None and "needs bitsandbytes >= 0.99.0" in problem
    assert f"bitsandbytes {metadata.version('bitsandbytes')}" in problem


@pytest.mark.parametrize("error", [ValueError("Target modules {'to_x'} not found in the base model"),
                                   RuntimeError("shape mismatch"), ValueError("bad version string for style")])
def test_other_errors_are_not_called_version_problems(error):
    assert dependency_problem(error) is None


class RefusingModule:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def add_adapter(self, config) -> None:
        raise self.error


def fake_family(module: RefusingModule) -> SimpleNamespace:
    return SimpleNamespace(denoiser=lambda pipe: module, denoiser_name="unet", text_encoders=lambda pipe: {})


def lora_config() -> SimpleNamespace:
    return SimpleNamespace(seed=0, quantize_base=None, train_text_encoder=False, target_modules=("to_q",), rank=4,
                           alpha=4, gradient_checkpointing=False)


def test_training_reports_a_version_error_as_one_not_as_bad_targets():
    config = lora_config()
    with pytest.raises(TrainingError) as caught:
        _add_adapters(fake_family(RefusingModule(ValueError(TRANSFORMERS_PEFT_ERROR))), config, pipe=None)
    assert caught.value.code == "dependency_version"
    assert "peft" in caught.value.message and "scripts/setup-env" in caught.value.message


def test_training_still_reports_bad_targets_as_such():
    config = lora_config()
    with pytest.raises(TrainingError) as caught:
        _add_adapters(fake_family(RefusingModule(ValueError("Target modules {'to_x'} not found"))), config, None)
    assert caught.value.code == "bad_target_modules"


def test_diffusers_and_transformers_notices_reach_our_log_not_their_own_stream(tmp_path):
    import io
    import logging

    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    from storage.logs import configure_logging
    from trainer.library_logs import route_model_library_logs

    stream, log_file = io.StringIO(), tmp_path / "likeness.log"
    configure_logging("INFO", stream=stream, log_file=log_file, stream_level="WARNING")
    try:
        diffusers_logging.set_verbosity_error()  # as an earlier caller in the process may have left it
        transformers_logging.set_verbosity_error()
        route_model_library_logs()
        diffusers_logging.get_logger("diffusers.loaders.peft").warning("No LoRA keys associated to CLIPTextModel")
        transformers_logging.get_logger("transformers.image_processing").warning("requires torchvision")
        kept = log_file.read_text()
        assert "No LoRA keys associated" in kept and "requires torchvision" in kept
        assert stream.getvalue() == ""
    finally:
        logging.captureWarnings(False)
        for handler in list(logging.getLogger().handlers):
            handler.close()
        logging.getLogger().handlers.clear()
