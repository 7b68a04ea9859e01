"""The model libraries' versions: checked against the lock file at start, and named when one breaks another.

Reads package metadata only (no torch import), so the check costs nothing at start-up.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from pathlib import Path

WATCHED = ("torch", "diffusers", "peft", "transformers", "bitsandbytes")
LOCK_DIR = Path(__file__).resolve().parent.parent / "requirements"
FIX = "Re-run `scripts/setup-env` (it runs with ./run-bot) to install the locked versions."
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
_NEEDED = re.compile(r"(>=|==|<=|>|<|~=)\s*v?(\d+(?:\.\d+)+)")
_GREATER_THAN = re.compile(r"(?:greater than|at least|newer than|or higher)\D{0,10}(\d+(?:\.\d+)+)", re.IGNORECASE)


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def lock_file() -> Path | None:
    """The lock this environment was built from: LIKENESS_LOCK_FILE when set (`scripts/lock upgrade` sets it),
    else this Python's CPU set when torch is a CPU build, else its CUDA set (scripts/setup-env's choice)."""
    if chosen := os.environ.get("LIKENESS_LOCK_FILE"):
        return Path(chosen)
    torch = installed_version("torch") or ""
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    path = LOCK_DIR / f"{python}-{'cpu' if torch.endswith('+cpu') else 'cuda'}.lock"
    return path if path.is_file() else None


def locked_versions(lock: Path) -> dict[str, str]:
    return {name.lower().replace("_", "-"): version for name, version in _PIN.findall(lock.read_text())}


def version_drift(lock: Path | None = None) -> list[str]:
    """'package installed (lock: locked)' for each watched package that differs from the lock."""
    lock = lock or lock_file()
    if lock is None:
        return []
    pins = locked_versions(lock)
    return [f"{name} {installed_version(name) or 'missing'} (lock: {pins[name]})"
            for name in WATCHED if name in pins and installed_version(name) != pins[name]]


def drift_warning(lock: Path | None = None) -> str | None:
    """One line for the log when the model libraries are not the locked ones, else None."""
    drift = version_drift(lock)
    if not drift:
        return None
    return f"installed model libraries differ from the lock: {', '.join(drift)}. {FIX}"


def dependency_problem(error: BaseException) -> str | None:
    """A plain sentence when `error` says one installed library is too old or new for another, else None."""
    text = str(error)
    if "version" not in text.lower() and not _NEEDED.search(text):
        return None
    named = [name for name in WATCHED if re.search(rf"\b{name}\b", text, re.IGNORECASE)]
    if not named:
        return None
    package = named[0]
    needed = _NEEDED.search(text)
    if needed:
        requirement = f"{package} {needed.group(1)} {needed.group(2)}"
    else:
        newer = _GREATER_THAN.search(text)
        requirement = f"{package} newer than {newer.group(1)}" if newer else f"another {package} version"
    users = [name for name in WATCHED if name != package and installed_version(name)]
    user = next((name for name in ("transformers", "diffusers") if name in users), users[0] if users else "Likeness")
    return (f"The installed {package} {installed_version(package) or '(missing)'} does not fit "
            f"{user} {installed_version(user) or ''}".rstrip() + f", which needs {requirement}. {FIX}")
