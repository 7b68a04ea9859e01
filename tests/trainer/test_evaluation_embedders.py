"""The CLIP and DINO code paths, on tiny random-weight checkpoints loaded through from_pretrained."""

import numpy as np
import pytest
from PIL import Image

from tests.corpus import astronaut_rgb, camera_rgb
from tests.trainer.evaluation_fixtures import tiny_clip_path, tiny_dino_path  # noqa: F401 (fixtures)
from trainer.evaluation.embedders import available_models, load_clip, load_dino
from trainer.evaluation.fidelity import prompt_fidelity


def _photos():
    return [Image.fromarray(astronaut_rgb()).resize((64, 64)), Image.fromarray(camera_rgb()).resize((64, 64))]


def test_clip_embeds_images_and_texts(tiny_clip_path):
    clip = load_clip(str(tiny_clip_path))
    photos = _photos()
    images = clip.embed_images(photos)
    texts = clip.embed_texts(["a photo of a person", "a painting of a lighthouse"])
    assert images.shape[0] == 2 and texts.shape[0] == 2 and images.shape[1] == texts.shape[1]
    similarity = clip.image_similarity().similarity(photos, photos)
    assert np.allclose(np.diag(similarity), 1.0, atol=1e-5)
    score = prompt_fidelity(clip, photos, ["a photo of a person", "a photo of a man with a camera"])
    assert -1.0 <= score <= 1.0 and np.isfinite(score)


def test_dino_embeds_images(tiny_dino_path):
    dino = load_dino(str(tiny_dino_path))
    photos = _photos()
    similarity = dino.image_similarity().similarity(photos, photos)
    assert similarity.shape == (2, 2) and np.allclose(np.diag(similarity), 1.0, atol=1e-5)
    assert similarity[0, 1] < 1.0 - 1e-4  # different photos do not embed the same


def test_local_models_come_before_the_fallback(tiny_clip_path, tiny_dino_path, tmp_path):
    models = available_models(clip_path=tiny_clip_path, dino_path=tiny_dino_path, face_dir=tmp_path)
    keys = [m.key for m in models.similarities]
    assert keys[-3:] == ["dino", "clip_i", "fallback_pixels"]
    assert models.clip is not None and not models.notes
    assert all("fallback" not in m.method for m in models.similarities[:-1])


def test_missing_folder_is_not_downloaded(tmp_path):
    models = available_models(clip_path=tmp_path / "nowhere")  # the face models ship with the package
    assert models.clip is None and [m.key for m in models.similarities] == ["face_identity", "fallback_pixels"]
    with pytest.raises(OSError):
        load_clip(str(tmp_path / "nowhere"))
