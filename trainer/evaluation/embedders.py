"""Image (and text) embedders for subject and prompt fidelity, each used only when it exists offline.

- Face identity, on by default: dlib's ResNet face descriptor (128-d) through intake's detector, landmarks and
  descriptor (intake.faces, intake.face_landmarks; `dlib-bin` and `face_recognition_models` are main dependencies),
  the same measure intake uses to keep one person per subject. Images with no face found count as not the person.
- DINO (ViT CLS token) and CLIP (image and text towers) through transformers, from local folders only
  (`local_files_only=True`: nothing is ever downloaded).
- Fallback, always available: pixel similarity of face regions (Haar box when OpenCV finds a face, else the
  whole image; the training crops are face-centred squares already). It is labelled as a fallback wherever shown.

Every similarity returns a [generated, reference] matrix in [0, 1]-ish units where higher is more alike.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from intake.face_landmarks import DESCRIPTOR_FILE, LANDMARKS_FILE, FaceModelsMissing, face_identity, model_folder
from intake.faces import FaceBox, FoundFace, detect_faces, find_faces
from intake.rules import IntakeRules
from trainer.evaluation.metrics import as_array, cosine_similarity, euclidean_distances, structural_distance

log = logging.getLogger(__name__)

FACE_DESCRIPTOR_FILE = DESCRIPTOR_FILE
FACE_LANDMARKS_FILE = LANDMARKS_FILE
FALLBACK_METHOD = "fallback: pixel similarity (SSIM) of face regions (no face-identity, DINO or CLIP model installed)"


class SimilarityUnavailable(Exception):
    """This method cannot judge these images (e.g. no face found in any training photo)."""


class ImageSimilarity(Protocol):
    key: str  # short id stored in metrics: face_identity, dino, clip_i, fallback_pixels
    method: str  # what it is, in words, shown to users next to the number
    aggregate: str  # "pairwise" (mean over all pairs) or "nearest" (each image vs its closest photo)

    def similarity(self, generated: list[Image.Image], references: list[Image.Image]) -> np.ndarray: ...


# --------------------------------------------------------------------------- fallback


class FacePixelSimilarity:
    """1 - (1 - SSIM) of face regions at 64 px; each generated image is compared with its nearest photo,
    because pixels are not pose-invariant and averaging over poses would mostly measure pose."""

    key = "fallback_pixels"
    method = FALLBACK_METHOD
    aggregate = "nearest"

    def similarity(self, generated: list[Image.Image], references: list[Image.Image]) -> np.ndarray:
        rows = [face_region(image) for image in generated]
        columns = [face_region(image) for image in references]
        return np.array([[1.0 - structural_distance(r, c) for c in columns] for r in rows]).reshape(
            len(rows), len(columns))


def face_region(image: Image.Image, size: int = 64) -> np.ndarray:
    """The largest detected face (with a little margin) as a size x size array, else the whole image."""
    rgb = np.asarray(image.convert("RGB"))
    faces = detect_faces(rgb, profiles=False) if min(rgb.shape[:2]) >= 48 else []
    if faces:
        box = faces[0].square_crop(rgb.shape[1], rgb.shape[0], margin=0.15)
        image = image.crop((box.x, box.y, box.right, box.bottom))
    return as_array(image, size)


# --------------------------------------------------------------------------- embeddings


class EmbeddingSimilarity:
    """Cosine similarity of embeddings, averaged over all pairs (the DreamBooth paper's CLIP-I / DINO)."""

    aggregate = "pairwise"

    def __init__(self, key: str, method: str, embed):
        self.key, self.method, self.embed = key, method, embed

    def similarity(self, generated: list[Image.Image], references: list[Image.Image]) -> np.ndarray:
        return cosine_similarity(self.embed(generated), self.embed(references))


@dataclass
class ClipModel:
    """A local CLIP checkpoint: image embeddings (CLIP-I) and image-text similarity (CLIP-T)."""

    path: str
    model: object
    processor: object
    tokenizer: object

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        inputs = self.processor(images=[i.convert("RGB") for i in images], return_tensors="pt")
        with torch.no_grad():
            features = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        return _pooled(features)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        inputs = self.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt",
                                max_length=min(self.tokenizer.model_max_length, 77))
        with torch.no_grad():
            features = self.model.get_text_features(input_ids=inputs["input_ids"],
                                                    attention_mask=inputs.get("attention_mask"))
        return _pooled(features)

    def text_image_similarity(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """Cosine similarity of images[i] with texts[i] (CLIP-T), one value per image."""
        return np.diag(cosine_similarity(self.embed_images(images), self.embed_texts(texts)))

    def image_similarity(self) -> EmbeddingSimilarity:
        return EmbeddingSimilarity("clip_i", f"CLIP-I (cosine of CLIP image embeddings, {Path(self.path).name})",
                                   self.embed_images)


@dataclass
class DinoModel:
    path: str
    model: object
    processor: object

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        inputs = self.processor(images=[i.convert("RGB") for i in images], return_tensors="pt")
        with torch.no_grad():
            hidden = self.model(pixel_values=inputs["pixel_values"]).last_hidden_state
        return hidden[:, 0].float().numpy()  # the CLS token, as the DreamBooth paper's DINO metric

    def image_similarity(self) -> EmbeddingSimilarity:
        return EmbeddingSimilarity("dino", f"DINO (cosine of ViT CLS embeddings, {Path(self.path).name})",
                                   self.embed_images)


def _pooled(features) -> np.ndarray:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor.
    tensor = getattr(features, "pooler_output", features)
    return tensor.float().numpy()


@functools.lru_cache(maxsize=2)
def load_clip(path: str) -> ClipModel:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:  # padding a batch of prompts needs one; CLIP pads with its end token
        tokenizer.pad_token = tokenizer.eos_token
    return ClipModel(path, model, processor, tokenizer)


@functools.lru_cache(maxsize=2)
def load_dino(path: str) -> DinoModel:
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return DinoModel(path, model, AutoImageProcessor.from_pretrained(path, local_files_only=True))


# --------------------------------------------------------------------------- dlib face identity


def face_model_dir(configured: str | Path | None = None) -> Path | None:
    """Where dlib's face model files are: a configured folder, else the face_recognition_models package."""
    try:
        return model_folder(configured)
    except FaceModelsMissing:
        return None


def _crop_face(width: int, height: int) -> FoundFace:
    """Where the face is in one of our training crops when the detector misses it (intake.aligned_crop)."""
    rules = IntakeRules.for_family("sd15")
    side = min(width, height) / (1 + 2 * rules.margin)
    return FoundFace(FaceBox(round(width / 2 - side / 2), round(height * rules.face_center_at - side / 2),
                             round(side), round(side)))


class FaceIdentitySimilarity:
    """dlib's 128-d face descriptors; similarity = 1 - Euclidean distance (dlib calls < 0.6 the same person,
    i.e. similarity > 0.4). A generated image without a detectable face scores 0."""

    key = "face_identity"
    aggregate = "pairwise"
    method = "face identity (dlib ResNet descriptors; above 0.4 is usually the same person)"

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.faces_found: tuple[int, int] = (0, 0)

    def descriptor(self, image: Image.Image, whole_image_if_none: bool) -> np.ndarray | None:
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        faces = find_faces(rgb)
        if not faces:
            if not whole_image_if_none:
                return None
            faces = [_crop_face(rgb.shape[1], rgb.shape[0])]  # training crops are face-centred
        return face_identity(rgb, faces[0], self.folder).descriptor

    def similarity(self, generated: list[Image.Image], references: list[Image.Image]) -> np.ndarray:
        refs = [d for d in (self.descriptor(i, True) for i in references) if d is not None]
        if not refs:
            raise SimilarityUnavailable("no face found in the training photos")
        gens = [self.descriptor(i, False) for i in generated]
        self.faces_found = (sum(d is not None for d in gens), len(gens))
        matrix = np.zeros((len(gens), len(refs)))
        for row, descriptor in enumerate(gens):
            if descriptor is not None:
                matrix[row] = np.clip(1.0 - euclidean_distances(descriptor, np.stack(refs))[0], 0.0, 1.0)
        return matrix


@functools.lru_cache(maxsize=1)
def load_face_identity(folder: str) -> FaceIdentitySimilarity:
    return FaceIdentitySimilarity(Path(folder))


def dlib_available() -> bool:
    """dlib is a main dependency (dlib-bin); kept so callers can still ask."""
    return True


# --------------------------------------------------------------------------- choosing


@dataclass
class EvaluationModels:
    """What this machine can measure with: subject-fidelity methods in order of preference, and CLIP."""

    similarities: list  # ImageSimilarity, best first; the pixel fallback is always last
    clip: ClipModel | None
    notes: list[str]


def available_models(clip_path: str | Path | None = None, dino_path: str | Path | None = None,
                     face_dir: str | Path | None = None) -> EvaluationModels:
    """Load what exists locally; anything missing or broken is noted and skipped, never fatal."""
    similarities, notes, clip = [], [], None
    folder = face_model_dir(face_dir)
    if folder is not None and dlib_available():
        _try(notes, "face identity", lambda: similarities.append(load_face_identity(str(folder))))
    if dino_path:
        _try(notes, "DINO", lambda: similarities.append(load_dino(str(dino_path)).image_similarity()))
    if clip_path:
        clip = _try(notes, "CLIP", lambda: load_clip(str(clip_path)))
        if clip is not None:
            similarities.append(clip.image_similarity())
    similarities.append(FacePixelSimilarity())
    return EvaluationModels(similarities, clip, notes)


def _try(notes: list[str], name: str, load):
    try:
        return load()
    except Exception as error:  # a broken local model must not cost the user their metrics
        log.warning("%s model could not be loaded for evaluation: %s", name, error)
        notes.append(f"{name} model not usable ({type(error).__name__})")
        return None
