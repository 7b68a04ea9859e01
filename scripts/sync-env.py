#!/usr/bin/env python3
"""Make the running environment match a lock file exactly, or (--check) report how it differs.

  python scripts/sync-env.py LOCK          uninstall what the lock lacks, then check
  python scripts/sync-env.py --check LOCK  exit 1 and list the differences when the set drifted

Standard library only: it runs in a half-built venv. Likeness itself (the editable install) and pip are not locked.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
UNLOCKED = {"likeness", "pip"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(lock: Path) -> dict[str, str]:
    return {canonical(name): version for name, version in PIN.findall(lock.read_text())}


def installed() -> dict[str, str]:
    found = {canonical(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    return {name: version for name, version in found.items() if name not in UNLOCKED}


def drift(want: dict[str, str], have: dict[str, str]) -> list[str]:
    """One line per difference between the locked and the installed set; empty when they are equal."""
    lines = [f"missing: {name}=={want[name]}" for name in sorted(want.keys() - have.keys())]
    lines += [f"not in the lock: {name}=={have[name]}" for name in sorted(have.keys() - want.keys())]
    lines += [f"version: {name} is {have[name]}, the lock has {want[name]}"
              for name in sorted(want.keys() & have.keys()) if want[name] != have[name]]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lock", type=Path)
    parser.add_argument("--check", action="store_true", help="only report; change nothing")
    args = parser.parse_args()
    want = locked(args.lock)
    extra = sorted(installed().keys() - want.keys())
    if extra and not args.check:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", *extra], check=True)
    differences = drift(want, installed())
    for line in differences:
        print(line)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
