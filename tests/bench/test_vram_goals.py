"""VRAM figures and goals of bench.realsize and the GPU proof: judged on the largest of allocated, reserved and
NVML process memory, and a figure that was not measured (a CPU run, a part that never finished) is a miss."""

from __future__ import annotations

import json

import pytest

from bench import gpu_proof
from bench.goals import finish
from bench.realsize import realsize_goals
from bench.vram import VramWatch, vram_figures

GIB = 2**30


def test_the_largest_figure_is_the_one_a_card_sees():
    figures = vram_figures(4 * GIB, int(5.5 * GIB), int(6.25 * GIB), "nvml process")
    assert figures == {"max_allocated_gb": 4.0, "max_reserved_gb": 5.5, "nvml_process_peak_gb": 6.25,
                       "nvml_source": "nvml process", "largest_gb": 6.25}
    assert vram_figures(4 * GIB, int(5.5 * GIB), None, None)["largest_gb"] == 5.5  # no NVML: reserved
    assert vram_figures(None, None, None, None)["largest_gb"] is None


def test_a_cpu_run_measures_no_vram():
    with VramWatch("cpu") as watch:
        pass
    assert set(watch.figures().values()) == {None}


def report(sd15_vram, flux_vram):
    return {"families_passed": 2, "families": {"sd15": {"vram_train": sd15_vram}, "flux": {"vram_train": flux_vram}}}


def test_realsize_judges_vram_on_cuda_only(capsys):
    assert [str(goal) for goal in realsize_goals(["sd15", "flux"], "cpu")] == ["families_passed >= 2"]
    goals = realsize_goals(["sd15", "flux"], "cuda")
    fits = report(vram_figures(5 * GIB, int(5.5 * GIB), int(5.9 * GIB), "nvml process"),
                  vram_figures(8 * GIB, 9 * GIB, None, None))
    assert finish(fits, goals, as_json=True) == 0
    # allocated fits the 6 GB goal, but the caching allocator and the CUDA context do not
    over = report(vram_figures(5 * GIB, int(5.5 * GIB), int(6.4 * GIB), "nvml process"),
                  vram_figures(None, None, None, None))
    assert finish(over, goals, as_json=True) == 1
    assert over["goals_missed"] == [
        {"goal": "families.sd15.vram_train.largest_gb <= 6.0", "value": 6.4, "why": "missed"},
        {"goal": "families.flux.vram_train.largest_gb <= 10.0", "value": None, "why": "not measured"}]
    assert "goal missed: families.flux.vram_train.largest_gb <= 10.0" in capsys.readouterr().err


def write_part(out, name, **figures):
    (out / f"{name}.json").write_text(json.dumps({"part": name, "dry_run": False, **figures}))


def test_the_proof_summary_misses_a_goal_over_vram_and_a_part_that_never_ended(tmp_path, capsys):
    write_part(tmp_path, "sd15", failures=0, vram_train=vram_figures(5 * GIB, 6 * GIB, int(6.5 * GIB), "nvml"))
    write_part(tmp_path, "sdxl", failures=0, vram_train=vram_figures(9 * GIB, 10 * GIB, None, None))
    (tmp_path / "flux.json").write_text(json.dumps(gpu_proof.placeholder("flux", ["sd15", "sdxl"])))
    code = gpu_proof.summarize(tmp_path, ["sd15", "sdxl", "flux"], as_json=True)
    summary = json.loads(capsys.readouterr().out)
    assert code == 1
    assert {miss["goal"] for miss in summary["goals_missed"]} == {
        "parts.sd15.vram_train.largest_gb <= 6.0", "parts.flux.failures == 0",
        "parts.flux.vram_train.largest_gb <= 10.0"}
    assert summary["parts"]["flux"]["error"] == "did not finish (timed out or killed)"


def test_a_part_is_registered_with_its_goals(tmp_path, monkeypatch, capsys):
    """A new part (the lead's `preview`) is one function and one register() call."""
    monkeypatch.setattr(gpu_proof, "PARTS", dict(gpu_proof.PARTS))
    gpu_proof.register(gpu_proof.Part("preview", lambda context: {"failures": 0, "seconds": 1.5},
                                      lambda dry_run: [gpu_proof.Goal("seconds", "<=", 2.0)]))
    assert gpu_proof.run_part("preview", tmp_path, tmp_path / "models", True, []) == 0
    written = json.loads((tmp_path / "preview.json").read_text())
    assert written["goals_missed"] == [] and written["seconds"] == 1.5
    assert gpu_proof.summarize(tmp_path, ["preview"], as_json=True) == 0


@pytest.mark.parametrize("dry_run", [True, False])
def test_every_part_requires_no_failures(dry_run):
    for part in gpu_proof.PARTS.values():
        assert "failures == 0" in [str(goal) for goal in part.goals(dry_run)]
