"""The locked install: the environment equals the lock, both locks cover pyproject.toml, drift is reported."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from trainer.versions import lock_file

ROOT = Path(__file__).resolve().parent.parent
SYNC = ROOT / "scripts" / "sync-env.py"
LOCKS = {kind: ROOT / "requirements" / f"{kind}.lock" for kind in ("cpu", "cuda")}
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


def test_both_locks_satisfy_every_requirement_of_pyproject():
    for kind, lock in LOCKS.items():
        locked = pins(lock)
        for requirement in project_requirements():
            if requirement.marker and not requirement.marker.evaluate({"platform_system": "Linux",
                                                                       "platform_machine": "x86_64"}):
                continue
            name = re.sub(r"[-_.]+", "-", requirement.name).lower()
            assert name in locked, f"{kind}.lock lacks {name}: run scripts/lock"
            version = locked[name].split("+")[0]
            assert requirement.specifier.contains(version, prereleases=True), f"{kind}.lock: {name}=={version}"


def test_both_sets_pin_one_torch_release_and_every_file_has_a_hash():
    cpu, cuda = pins(LOCKS["cpu"]), pins(LOCKS["cuda"])
    assert cpu["torch"] == cuda["torch"] + "+cpu"
    assert any(name.startswith("nvidia-") for name in cuda) and not any(name.startswith("nvidia-") for name in cpu)
    for lock in LOCKS.values():
        entries = re.split(r"\n(?=\S)", lock.read_text().split("\n", 2)[2])
        assert all("--hash=sha256:" in entry for entry in entries if entry.strip() and not entry.startswith("#"))


def test_the_known_break_is_excluded_by_the_ranges():
    """transformers 5.24 needs a peft that does not exist yet; pip users must not get that pair."""
    transformers = next(req for req in project_requirements() if req.name == "transformers")
    assert not transformers.specifier.contains("5.24.0")
    assert transformers.specifier.contains(pins(LOCKS["cpu"])["transformers"])
