"""scripts/gpu-proof --dry-run: the GPU proof's exact code path on the tiny models on CPU, so it cannot rot
before a GPU is lent (the real run needs CUDA; see bench/gpu_proof.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Three tiny families trained, exported and served, plus a console session that trains and renders: minutes
# on an idle machine, more on a shared one.
pytestmark = pytest.mark.timeout(2400)


@pytest.fixture(scope="module")
def dry_run_proof(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    work = tmp_path_factory.mktemp("gpu-proof")
    out = work / "proof.json"
    env = dict(os.environ, LIKENESS_PROOF_PYTHON=sys.executable)
    finished = subprocess.run([str(ROOT / "scripts" / "gpu-proof"), "--dry-run", "--out", str(out)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    return finished, json.loads(out.read_text())


def test_dry_run_passes_every_part(dry_run_proof):
    finished, proof = dry_run_proof
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert proof["dry_run"] is True
    assert set(proof["parts"]) == {"sd15", "sdxl", "flux", "selfies"}
    assert proof["families_passed"] == 3
    for part, result in proof["parts"].items():
        assert result["passed"] is True, (part, result)


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_dry_run_reports_training_and_serving_figures(dry_run_proof, family):
    result = dry_run_proof[1]["parts"][family]
    assert result["family"] == f"tiny-{family}"
    assert set(result["stages"]) == {"train", "export", "load", "render"}
    assert len(result["step_seconds"]) == result["steps"] == 3
    assert result["s_per_step"] > 0 and result["peak_rss_mb"] > 0
    assert result["class_images_generated"] == 1
    assert result["parameters"]["transformer" if family == "flux" else "unet"] > 0
    assert result["peak_vram_train_gb"] is None  # CPU: nothing to report, and nothing invented
    for mode, serving in result["serving"].items():
        assert serving["s_per_image"] > 0, mode
        assert serving["cold_adapter_request_s"] > 0 and serving["switch_request_s"] > 0, mode


def test_dry_run_times_selfies_to_first_image(dry_run_proof):
    selfies = dry_run_proof[1]["parts"]["selfies"]
    assert selfies["photos"] == 5
    assert selfies["exit_code"] == 0
    assert selfies["pictures"], selfies["console_tail"]
    assert 0 < selfies["selfies_to_first_image_s"] <= selfies["console_s"]
