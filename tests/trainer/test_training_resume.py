"""Stop, cancel, crash and resume: a resumed run ends with exactly the weights of an uninterrupted one.

Exactness holds because every step's randomness (batch, latent sample, noise, timesteps) is drawn
from generators seeded by (seed, step), and checkpoints hold adapter, optimizer and step. On one
machine the comparison is bit-exact (torch.equal); no tolerance is needed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tests.trainer.training_fixtures import (  # noqa: F401  (session fixtures)
    RecordingHooks,
    make_config,
    models_dir,
    photo_dir,
    read_tensors,
    shared_class_cache,
    subject,
)
from trainer.training.checkpoints import list_checkpoints
from trainer.training.run import train_adapter

FAMILY = "tiny-sd15"
STEPS = 6


def _config(job: Path, models_dir: Path, photo_dir: Path, cache: Path, **overrides):  # noqa: F811
    values = dict(steps=STEPS, checkpoint_every=2, optimizer="adamw8bit", learning_rate=5e-3, seed=11)
    values.update(overrides)
    return make_config(FAMILY, job, models_dir, cache, [subject(photo_dir)], **values)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, models_dir, photo_dir, shared_class_cache):  # noqa: F811
    config = _config(tmp_path_factory.mktemp("straight"), models_dir, photo_dir, shared_class_cache)
    result = train_adapter(config)
    return result, read_tensors(result.adapter_path)


def _assert_same_weights(result, reference):
    reference_result, reference_tensors = reference
    tensors = read_tensors(result.adapter_path)
    assert tensors.keys() == reference_tensors.keys()
    assert all(torch.equal(tensors[k], reference_tensors[k]) for k in tensors)
    assert result.loss_history == reference_result.loss_history


def test_shutdown_then_resume_equals_uninterrupted(tmp_path, models_dir, photo_dir, shared_class_cache,  # noqa: F811
                                                   uninterrupted):
    config = _config(tmp_path, models_dir, photo_dir, shared_class_cache)
    stopped = train_adapter(config, RecordingHooks(stop_after=3, stop_reason="shutdown"))
    assert stopped.stopped == "shutdown" and stopped.steps_done == 3 and stopped.adapter_path is None
    assert [step for step, _ in list_checkpoints(config.checkpoint_dir)] == [2, 3]
    hooks = RecordingHooks()
    resumed = train_adapter(config, hooks)
    assert hooks.progress_steps == [4, 5, 6]  # only the remaining steps ran
    assert resumed.steps_done == STEPS and resumed.stopped is None
    _assert_same_weights(resumed, uninterrupted)


def test_half_written_checkpoint_is_skipped(tmp_path, models_dir, photo_dir, shared_class_cache,  # noqa: F811
                                            uninterrupted):
    config = _config(tmp_path, models_dir, photo_dir, shared_class_cache)
    train_adapter(config, RecordingHooks(stop_after=4, stop_reason="shutdown"))
    newest = config.checkpoint_dir / "step-00000004" / "state.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # torn write
    (config.checkpoint_dir / ".tmp-step-00000006-123").mkdir()  # debris of a crash mid-save
    hooks = RecordingHooks()
    resumed = train_adapter(config, hooks)
    assert hooks.progress_steps == [3, 4, 5, 6]  # resumed from step 2, the newest whole checkpoint
    _assert_same_weights(resumed, uninterrupted)
    assert not list(config.checkpoint_dir.glob(".tmp-*"))
    assert len(list_checkpoints(config.checkpoint_dir)) == 2  # rotation keeps the last two


def test_cancel_is_honoured_within_one_step(tmp_path, models_dir, photo_dir, shared_class_cache):  # noqa: F811
    config = _config(tmp_path, models_dir, photo_dir, shared_class_cache, steps=20, checkpoint_every=0)
    hooks = RecordingHooks(stop_after=2, stop_reason="cancel")
    result = train_adapter(config, hooks)
    assert result.stopped == "cancel" and result.steps_done == 2
    assert hooks.progress_steps == [1, 2]
    assert result.adapter_path is None and not (config.output_dir / "pytorch_lora_weights.safetensors").exists()


def test_checkpoint_of_another_config_is_not_resumed(tmp_path, models_dir, photo_dir, shared_class_cache):  # noqa: F811
    config = _config(tmp_path, models_dir, photo_dir, shared_class_cache, steps=2)
    train_adapter(config)
    changed = _config(tmp_path, models_dir, photo_dir, shared_class_cache, steps=2, seed=12)
    hooks = RecordingHooks()
    train_adapter(changed, hooks)
    assert hooks.progress_steps == [1, 2]  # started over


_WORKER = textwrap.dedent("""
    import sys, time, pickle
    from trainer.training.run import train_adapter
    config = pickle.loads(bytes.fromhex(sys.argv[1]))
    class SlowHooks:
        def progress(self, p): pass
        def preview(self, step, images): pass
        def should_stop(self): return None
        def between_steps(self): time.sleep(0.3)  # give the test time to kill us mid-run
    train_adapter(config, SlowHooks())
""")


@pytest.mark.slow
def test_killed_process_resumes_from_its_checkpoint(tmp_path, models_dir, photo_dir, shared_class_cache,  # noqa: F811
                                                    uninterrupted):
    import pickle

    config = _config(tmp_path, models_dir, photo_dir, shared_class_cache)
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen([sys.executable, "-c", _WORKER, pickle.dumps(config).hex()], cwd=repo,
                               env={**os.environ, "PYTHONPATH": str(repo)})
    deadline = time.monotonic() + 300
    while not (config.checkpoint_dir / "step-00000002").exists():
        assert process.poll() is None, "worker exited early"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (config.output_dir / "pytorch_lora_weights.safetensors").exists()
    hooks = RecordingHooks()
    resumed = train_adapter(config, hooks)
    assert hooks.progress_steps[0] > 1  # picked up from a checkpoint, not from scratch
    _assert_same_weights(resumed, uninterrupted)
