"""Two identical trainings give byte-identical adapter files, even in processes whose string hashing differs.

Each run is its own Python process with another PYTHONHASHSEED: the order of a set (peft keeps `target_modules` as
one) changes with it, and that order used to reach the file's `lora_adapter_metadata`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.training_fixtures import read_metadata, write_photos

REPO = Path(__file__).resolve().parents[2]
TRAIN = """
import sys
from pathlib import Path
from tests.trainer.training_fixtures import make_config, subject
from trainer.training.run import train_adapter

photos, models, cache, job = (Path(p) for p in sys.argv[1:5])
config = make_config("tiny-sd15", job, models, cache, [subject(photos)], steps=2, seed=7)
result = train_adapter(config)
print(result.adapter_path)
print(result.kohya_path)
"""


def _train(tmp_path: Path, hash_seed: str, name: str) -> list[Path]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, str(tmp_path / "photos"), str(tmp_path / "models"), str(tmp_path / "cache"),
         str(tmp_path / name)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [Path(line) for line in done.stdout.split()[-2:]]


@pytest.mark.slow
def test_identical_trainings_write_byte_identical_adapter_files(tmp_path):
    (tmp_path / "photos").mkdir()
    write_photos(tmp_path / "photos", "subject-a", count=2, seed=1)
    first = _train(tmp_path, "1", "job-1")
    second = _train(tmp_path, "2", "job-2")
    for one, two in zip(first, second, strict=True):
        assert one.name == two.name and one != two
        assert one.read_bytes() == two.read_bytes(), f"{one.name} differs between identical runs"
    config = json.loads(read_metadata(first[0])["lora_adapter_metadata"])
    assert config["unet.target_modules"] == sorted(config["unet.target_modules"]) and config["unet.target_modules"]
