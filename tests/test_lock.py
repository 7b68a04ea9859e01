"""The locked install: the environment equals the lock, every lock covers pyproject.toml, drift is reported."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from trainer.versions import lock_file

ROOT = Path(__file__).resolve().parent.parent
SYNC = ROOT / "scripts" / "sync-env.py"
LOCK_SCRIPT = ROOT / "scripts" / "lock"
SETUP = ROOT / "scripts" / "setup-env"


def lock_sets() -> dict[tuple[str, str], Path]:
    """scripts/lock's own table of sets: (python, kind) -> lock file."""
    loader = importlib.machinery.SourceFileLoader("likeness_lock_script", str(LOCK_SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return dict(module.LOCKS)


LOCKS = lock_sets()
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def pins(lock: Path) -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in PIN.findall(lock.read_text())}


def this_environments_lock() -> Path:
    """The lock this venv was built from (the worker's own rule, which honours LIKENESS_LOCK_FILE)."""
    return lock_file()


def check(lock: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SYNC), "--check", str(lock)], capture_output=True, text=True)


def test_the_installed_set_equals_the_lock():
    result = check(this_environments_lock())
    assert result.stdout == "" and result.returncode == 0


def test_a_drifted_package_is_named(tmp_path):
    lock = this_environments_lock()
    text = lock.read_text()
    peft = pins(lock)["peft"]
    drifted = tmp_path / "drifted.lock"
    drifted.write_text(text.replace(f"peft=={peft}", "peft==0.0.1"))
    result = check(drifted)
    assert result.returncode == 1
    assert result.stdout.strip() == f"version: peft is {peft}, the lock has 0.0.1"


def test_a_package_the_lock_lacks_is_named(tmp_path):
    lock = this_environments_lock()
    trimmed = tmp_path / "trimmed.lock"
    trimmed.write_text(re.sub(r"^wordfreq==.*?(?=^\S)", "", lock.read_text(), flags=re.MULTILINE | re.DOTALL))
    result = check(trimmed)
    assert result.returncode == 1 and "not in the lock: wordfreq==" in result.stdout


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [req for group in project["optional-dependencies"].values() for req in group]
    return [Requirement(text) for text in project["dependencies"] + extras]


def test_every_supported_python_has_a_lock_for_each_kind_of_machine():
    pythons = {python for python, _ in LOCKS}
    assert pythons == {"3.11", "3.12", "3.13"}
    for python in pythons:
        assert (python, "cuda") in LOCKS  # the CUDA set also serves machines without a GPU where no CPU set exists
    for (python, kind), lock in LOCKS.items():
        assert lock.is_file(), f"{lock.name} is missing: run scripts/lock"
        assert lock.name == f"py{python.replace('.', '')}-{kind}.lock"


def test_every_lock_satisfies_every_requirement_of_pyproject():
    for (python, kind), lock in LOCKS.items():
        locked = pins(lock)
        environment = {"platform_system": "Linux", "platform_machine": "x86_64", "python_version": python,
                       "sys_platform": "linux"}
        for requirement in project_requirements():
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            name = re.sub(r"[-_.]+", "-", requirement.name).lower()
            assert name in locked, f"{lock.name} lacks {name}: run scripts/lock"
            version = locked[name].split("+")[0]
            assert requirement.specifier.contains(version, prereleases=True), f"{lock.name}: {name}=={version}"


def test_every_set_pins_one_torch_release_and_every_file_has_a_hash():
    cpu = pins(LOCKS[("3.11", "cpu")])
    assert not any(name.startswith("nvidia-") for name in cpu) and cpu["torch"].endswith("+cpu")
    release = cpu["torch"].removesuffix("+cpu")
    for (python, kind), lock in LOCKS.items():
        locked = pins(lock)
        assert locked["torch"].removesuffix("+cpu") == release, lock.name
        if kind == "cuda":
            assert locked["torch"] == release and any(name.startswith("nvidia-") for name in locked), lock.name
        entries = re.split(r"\n(?=\S)", lock.read_text().split("\n", 2)[2])
        assert all("--hash=sha256:" in entry for entry in entries if entry.strip() and not entry.startswith("#"))


def test_the_model_libraries_are_the_same_in_every_set():
    """One set of model libraries everywhere: a figure measured on 3.12 holds for 3.11."""
    model_libraries = ("diffusers", "peft", "transformers", "accelerate", "bitsandbytes", "safetensors")
    first = pins(LOCKS[("3.11", "cuda")])
    for lock in LOCKS.values():
        assert {name: pins(lock)[name] for name in model_libraries} == {name: first[name] for name in model_libraries}


def test_this_environment_was_built_from_its_pythons_lock():
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-"
    assert this_environments_lock().name.startswith(tag)


def run_setup(python: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": python, "LIKENESS_VENV": str(tmp_path / "venv")}
    return subprocess.run([str(SETUP)], capture_output=True, text=True, env=env, timeout=60)


def test_setup_refuses_an_unsupported_python_in_one_line(tmp_path):
    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\necho 3.10\n")
    fake.chmod(0o755)
    result = run_setup(str(fake), tmp_path)
    assert result.returncode == 1 and not (tmp_path / "venv").exists()
    assert result.stderr.strip() == ("setup: Python 3.10 is not supported; Likeness supports CPython 3.11, 3.12 and "
                                     "3.13 (set PYTHON=/path/to/python3.12)")


def test_setup_says_which_lock_it_installs(tmp_path):
    """The first line names the Python and the lock; the install itself is cut short by a python -m venv that
    fails (the real install is what ./run-tests did to make this venv)."""
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -c ] && echo 3.12 && exit 0\nexit 3\n")
    fake.chmod(0o755)
    result = run_setup(str(fake), tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert lines[0].startswith("Setting up ") and "with Python 3.12 from requirements/py312-cuda.lock" in lines[0]
    assert "no CPU-only torch is locked for Python 3.12" in lines[0]
    assert "python3.12-venv" in lines[-1]


def test_the_known_break_is_excluded_by_the_ranges():
    """transformers 5.24 needs a peft that does not exist yet; pip users must not get that pair."""
    transformers = next(req for req in project_requirements() if req.name == "transformers")
    assert not transformers.specifier.contains("5.24.0")
    assert transformers.specifier.contains(pins(LOCKS[("3.11", "cpu")])["transformers"])
