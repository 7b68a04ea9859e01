"""Package boundaries: the import-linter contracts in pyproject.toml hold, and they would catch a breach.

The bot process never loads torch, diffusers, transformers, peft or the worker, even after suggesting a trigger
with the model's own tokenizer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "bot", "trainer", "intake", "storage")
MODEL_LIBRARIES = ("torch", "diffusers", "transformers", "peft", "trainer")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """`lint-imports` from this virtualenv on `tree` (its pyproject.toml and packages), without a cache."""
    command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def contract_count() -> int:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return len(config["tool"]["importlinter"]["contracts"])


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert f"Contracts: {contract_count()} kept, 0 broken." in report, report


def copy_of_the_tree(destination: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, destination / package, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", destination / "pyproject.toml")
    return destination


def add_line(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_the_contracts_catch_forbidden_imports_and_cycles(tmp_path):
    tree = copy_of_the_tree(tmp_path / "tree")
    add_line(tree / "intake" / "faces.py", "import torch")
    add_line(tree / "bot" / "services" / "errors.py", "import discord")
    add_line(tree / "storage" / "files.py", "import bot.render")
    add_line(tree / "storage" / "migrations.py", "import storage.schema")
    result = lint_imports(tree)
    report = result.stdout + result.stderr
    assert result.returncode != 0, report
    assert "intake is not allowed to import torch" in report, report
    assert "bot.services is not allowed to import discord" in report, report
    assert "storage is not allowed to import bot" in report, report
    assert "No cycles are allowed in storage." in report, report


TOKENIZER_CHECK = """
    import asyncio, json, sys
    from pathlib import Path

    import bot.app  # the whole Discord front end, as `python -m bot` loads it
    from bot.services import Requester, Services, Upload
    from bot.services.training import TrainRequest
    from storage.db import AsyncDatabase
    from storage.files import FileStore
    from storage.settings import Settings

    async def main(data_dir, photos):
        settings = Settings(_env_file=None, data_dir=data_dir, model_family="tiny-sd15", min_photos_per_subject=2)
        async with await AsyncDatabase.open(settings.database_path) as db:
            services = Services.build(settings, db, FileStore(settings.store_dir))
            me = Requester(user_id=1, display_name="Raj", guild_id=None, channel_id=None)
            uploads = tuple(Upload(Path(p).name, Path(p).read_bytes()) for p in photos)
            outcome = await services.training.start(me, TrainRequest(display_name="Raj", uploads=uploads))
        return outcome.subject.trigger, outcome.trigger_suggested

    trigger, suggested = asyncio.run(main(sys.argv[1], sys.argv[2:]))
    print(json.dumps({"trigger": trigger, "suggested": suggested, "modules": sorted(sys.modules)}))
"""


def write_clip_vocabulary(folder: Path, merges: list[str]) -> None:
    """CLIP's classic tokenizer files: single characters, each also as a word end, plus `merges`."""
    folder.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    for merge in merges:
        vocab[merge.replace(" ", "")] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def test_the_bot_suggests_triggers_with_the_model_tokenizer_without_loading_model_libraries(tmp_path):
    from intake.triggers import suggest_trigger
    from tests.corpus import astronaut_jpeg, camera_jpeg

    favourite = suggest_trigger("Raj", count=8)[-1]  # ranked first only if the tokenizer makes it one token
    assert len(favourite) == 4, favourite
    merges = [f"{favourite[0]} {favourite[1]}", f"{favourite[2]} {favourite[3]}</w>",
              f"{favourite[:2]} {favourite[2:]}</w>"]
    data_dir = tmp_path / "data"
    write_clip_vocabulary(data_dir / "models" / "tiny-sd15" / "tokenizer", merges)
    photos = []
    for name, data in (("astronaut.jpg", astronaut_jpeg()), ("camera.jpg", camera_jpeg())):
        (tmp_path / name).write_bytes(data)
        photos.append(str(tmp_path / name))

    script = textwrap.dedent(TOKENIZER_CHECK)
    result = subprocess.run([sys.executable, "-c", script, str(data_dir), *photos], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["trigger"], report["suggested"]) == (favourite, True)
    loaded = {name.split(".")[0] for name in report["modules"]}
    assert "bot" in loaded and "discord" in loaded
    assert loaded.isdisjoint(MODEL_LIBRARIES), sorted(loaded & set(MODEL_LIBRARIES))
