"""The likeness bench's summary arithmetic and its photos (the ablation itself runs in bench/, not in tests)."""

from PIL import Image

from bench.likeness import _summary, face_crops


def _row(seed, prior, drift, gain=1.0):
    return {"train_seed": seed, "prior_preservation": prior, "drift": drift, "drift_pixels": drift / 2,
            "fidelity_gain": gain, "train_s": 1.0, "eval_s": 0.5}


def test_drift_ratio_is_mean_with_prior_over_mean_without():
    runs = [_row(0, False, 0.2), _row(0, True, 0.1, 1.2), _row(1, False, 0.1), _row(1, True, 0.15, 1.4)]
    summary = _summary(runs, (0, 1), 10, {"learning_rate": 1e-3}, 3.0)
    assert summary["drift_ratio"] == round(0.125 / 0.15, 4)
    assert summary["drift_ratio_per_seed"] == [0.5, 1.5]
    assert summary["drift_ratio_robust"] is False  # one seed went the other way: reported, not hidden
    assert summary["fidelity_gain"]["with_prior"] == 1.3
    one_seed = _summary(runs[:2], (0,), 10, {}, 1.0)
    assert one_seed["drift_ratio_per_seed"] == [0.5] and one_seed["drift_ratio_robust"] is False
    assert summary["timings_s"] == {"total": 3.0, "train": 4.0, "evaluate": 2.0}


def test_bench_photos_are_face_crops_from_the_real_intake(tmp_path):
    crops = face_crops(tmp_path)
    assert len(crops) == 2
    for path in crops:
        with Image.open(path) as image:
            assert image.size == (64, 64)
