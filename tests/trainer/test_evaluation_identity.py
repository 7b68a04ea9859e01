"""The likeness score is on by default: dlib face identity through intake's detector, landmarks and descriptor."""

from __future__ import annotations

import io

from PIL import Image
from skimage import data as skdata

from intake.photos import inspect_photo
from intake.rules import IntakeRules
from tests import corpus
from trainer.evaluation.embedders import available_models, face_model_dir, load_face_identity


def test_face_identity_is_the_default_subject_fidelity_method():
    models = available_models()
    assert [m.key for m in models.similarities][0] == "face_identity"
    assert models.similarities[-1].key == "fallback_pixels"


def test_likeness_is_high_for_the_same_person_and_low_for_someone_else():
    similarity = load_face_identity(str(face_model_dir()))
    rules = IntakeRules.for_family("tiny-sd15", resolution=256)
    crop = inspect_photo(corpus.astronaut_png(), "a.png", 1, rules).prepared.crop  # a training crop
    reference = Image.open(io.BytesIO(crop))
    same = Image.fromarray(corpus.astronaut_rgb()[:, ::-1].copy())
    other = Image.fromarray(corpus.camera_rgb())
    faceless = Image.fromarray(skdata.coffee())
    matrix = similarity.similarity([same, other, faceless], [reference])
    assert matrix.shape == (3, 1)
    assert matrix[0, 0] > 0.6 and matrix[1, 0] < 0.4 and matrix[2, 0] == 0.0, matrix.round(2)
    assert similarity.faces_found == (2, 3)
