"""scripts/gpu-proof --dry-run --carry: the GPU proof's exact code path on the tiny models on CPU, run the way the
offline GPU host runs it, so neither the proof nor the carry can rot before a GPU is lent.

The carry here is built from this venv instead of downloaded (CI must stay fast): an archive with the carry's
layout (carry.json, site/, project/), where site/ holds scripts/gpu-carry's own choice of packages (linked from
this venv) and project/ a copy of the checkout. The "host" is this venv's Python started without its
site-packages (-S), seeing only the packages requirements/gpu-host.txt says the host has. So the run proves
that gpu-proof unpacks and runs a carry with the host's Python, and that the carry plus the host's packages hold
everything the proof imports (at this venv's versions; the CUDA-only paths need the real sitting).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Three tiny families trained, exported and served, plus a console session that trains and renders: minutes
# on an idle machine, more on a shared one.
pytestmark = pytest.mark.timeout(2400)


def gpu_carry():
    loader = importlib.machinery.SourceFileLoader("likeness_gpu_carry", str(ROOT / "scripts" / "gpu-carry"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def top_level_entries(dist: metadata.Distribution) -> set[str]:
    return {Path(str(file)).parts[0] for file in dist.files or [] if not str(file).startswith("..")}


def link_distributions(names: set[str], site_packages: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for dist in metadata.distributions(path=[str(site_packages)]):
        if gpu_carry().canonical(dist.metadata["Name"]) in names:
            for entry in top_level_entries(dist) - {"__pycache__"}:
                if (site_packages / entry).exists() and not (target / entry).exists():
                    (target / entry).symlink_to(site_packages / entry)


def with_their_needs(names: set[str]) -> set[str]:
    """`names` and, as installed here, every package they need: the host's packages at this venv's versions
    (e.g. this huggingface-hub needs httpx2 where the host's older one needs httpx)."""
    from packaging.requirements import Requirement

    canonical = gpu_carry().canonical
    installed = {canonical(dist.metadata["Name"]): dist for dist in metadata.distributions()}
    found, queue = set(), [name for name in names if name in installed]
    while queue:
        name = queue.pop()
        if name in found:
            continue
        found.add(name)
        for text in installed[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                if canonical(requirement.name) in installed:
                    queue.append(canonical(requirement.name))
    return found


def build_carry(work: Path) -> tuple[Path, Path, list[str]]:
    """(archive, host python, carried package names): the carry's layout from this venv."""
    carry = gpu_carry()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    host = carry.host_packages()
    carried = carry.carried_set(carry.lock_entries(carry.LOCK), host, carry.product_requirements())
    layout = work / "layout"
    link_distributions(set(carried), site_packages, layout / "site")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (layout / "project" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, layout / "project" / name)
    (layout / "carry.json").write_text(json.dumps({"commit": "working tree", "packages": carried}))
    archive = work / "carry.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("carry.json", "site", "project"):
            tar.add(layout / name, arcname=name)
    link_distributions(with_their_needs(set(host) - set(carried)) - set(carried), site_packages, work / "host-site")
    python = work / "host-python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{work / "host-site"}" '
                      f'exec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    return archive, python, carried


@pytest.fixture(scope="module")
def dry_run_proof(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, list[str]]:
    work = tmp_path_factory.mktemp("gpu-proof")
    archive, python, carried = build_carry(work)
    out = work / "out"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(LIKENESS_PROOF_PYTHON=str(python), LIKENESS_CARRY_DIR=str(work / "unpacked"))
    finished = subprocess.run([str(ROOT / "scripts" / "gpu-proof"), "--dry-run", "--carry", str(archive), "--out",
                               str(out)], cwd=work, env=env, capture_output=True, text=True, timeout=2000)
    summary = json.loads(finished.stdout.strip().splitlines()[-1]) if finished.stdout.strip() else {}
    return finished, summary, carried


def test_dry_run_from_the_carry_passes_every_part(dry_run_proof):
    finished, summary, _ = dry_run_proof
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert summary["dry_run"] is True and summary["goals_missed"] == []
    assert list(summary["parts"]) == ["sd15", "selfies", "sdxl", "flux"]
    for part, result in summary["parts"].items():
        assert result["failures"] == 0, (part, result.get("error"), result.get("stages"))


def test_the_proof_ran_the_carried_project_on_the_host_python(dry_run_proof):
    finished, summary, carried = dry_run_proof
    logs = finished.stderr
    assert "gpu-proof: carry working tree with" in logs
    sd15 = summary["parts"]["sd15"]
    assert re.search(r"likeness-carry|unpacked", sd15.get("adapter_path", "")) is None  # work stays in temp dirs
    assert sd15["libraries"]["diffusers"] and sd15["libraries"]["peft"]  # found through the carry's site/


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_dry_run_reports_training_and_serving_figures(dry_run_proof, family):
    result = dry_run_proof[1]["parts"][family]
    assert result["family"] == f"tiny-{family}"
    assert set(result["stages"]) == {"train", "export", "load", "render"}
    assert len(result["step_seconds"]) == result["steps"] == 3
    assert result["s_per_step"] > 0 and result["peak_rss_mb"] > 0
    assert result["class_images_generated"] == 1
    assert result["parameters"]["transformer" if family == "flux" else "unet"] > 0
    # CPU: nothing to report, and nothing invented
    assert set(result["vram_train"].values()) == {None} and result["peak_vram_train_gb"] is None
    for mode, serving in result["serving"].items():
        assert serving["s_per_image"] > 0, mode
        assert serving["cold_adapter_request_s"] > 0 and serving["switch_request_s"] > 0, mode


def test_dry_run_times_selfies_to_first_image(dry_run_proof):
    selfies = dry_run_proof[1]["parts"]["selfies"]
    assert selfies["photos"] == 5
    assert selfies["exit_code"] == 0
    assert selfies["pictures"], selfies["console_tail"]
    assert 0 < selfies["selfies_to_first_image_s"] <= selfies["console_s"]
