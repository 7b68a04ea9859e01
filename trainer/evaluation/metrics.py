"""Distances and similarities between images and embeddings. Plain numpy and scikit-image, no torch.

Images are compared as float RGB arrays in [0, 1] of one size (`as_array` resizes), so every figure is
comparable across models and resolutions:
- `structural_distance`: 1 - SSIM (scikit-image, over the three colour channels). 0 for identical images,
  rising as structure (edges, texture, layout) changes; about 1 for unrelated images.
- `pixel_distance`: mean absolute difference, in [0, 1]. Also sees flat colour shifts that SSIM discounts.
- `cosine_similarity`: of embedding rows, for CLIP / DINO / face-identity vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

ImageLike = Image.Image | np.ndarray
Distance = Callable[[np.ndarray, np.ndarray], float]
COMPARE_SIZE = 64  # side images are compared at: the tiny models' size, and enough for layout and colour


def as_array(image: ImageLike, size: int | None = COMPARE_SIZE) -> np.ndarray:
    """A float32 RGB array in [0, 1], resized to size x size (None keeps the size)."""
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            array = np.clip(array * 255.0 if array.max() <= 1.0 else array, 0, 255).astype(np.uint8)
        image = Image.fromarray(array if array.ndim == 3 else np.stack([array] * 3, axis=-1))
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.float32) / 255.0


def structural_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - SSIM of two same-size RGB arrays in [0, 1] (0 when identical)."""
    _check_pair(a, b)
    window = min(7, _odd_floor(min(a.shape[0], a.shape[1])))
    similarity = structural_similarity(a, b, channel_axis=2, data_range=1.0, win_size=window)
    return float(max(0.0, 1.0 - similarity))


def pixel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two same-size arrays in [0, 1]."""
    _check_pair(a, b)
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


DISTANCES: dict[str, Distance] = {"1-ssim": structural_distance, "mean_abs_pixel": pixel_distance}


def paired_distances(first: Sequence[np.ndarray], second: Sequence[np.ndarray], distance: Distance) -> list[float]:
    """distance(first[i], second[i]) for each i: same prompt and seed, before and after."""
    if len(first) != len(second):
        raise ValueError(f"paired_distances needs equal lists, got {len(first)} and {len(second)}")
    return [distance(a, b) for a, b in zip(first, second)]


def distance_matrix(rows: Sequence[np.ndarray], columns: Sequence[np.ndarray], distance: Distance) -> np.ndarray:
    """distance(rows[i], columns[j]) for every pair, shape [len(rows), len(columns)]."""
    return np.array([[distance(r, c) for c in columns] for r in rows], dtype=np.float64).reshape(len(rows),
                                                                                                  len(columns))


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of a with every row of b, shape [len(a), len(b)]."""
    return normalize_rows(np.atleast_2d(a)) @ normalize_rows(np.atleast_2d(b)).T


def euclidean_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of every row of a to every row of b (dlib's face-identity measure)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape to be compared, got {a.shape} and {b.shape}")


def _odd_floor(value: int) -> int:
    return value if value % 2 else value - 1
