"""One person per subject: compare the identity descriptors of a subject's photos, and of a family's subjects.

Descriptors are dlib's 128-d face embeddings (intake.face_landmarks); dlib calls two faces the same person when
their Euclidean distance is under 0.6. A photo is rejected only when it is clearly someone else: its median distance
to the subject's other photos is over DIFFERENT_PERSON_DISTANCE while those others agree among themselves (their
median distance is under SAME_PERSON_DISTANCE). With fewer than MIN_PHOTOS_TO_COMPARE photos nothing is said, and
when the photos split into groups with no clear majority nothing is rejected either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SAME_PERSON_DISTANCE = 0.6  # dlib's threshold: 99.38% correct on the LFW benchmark
DIFFERENT_PERSON_DISTANCE = 0.65  # a photo further than this from the others (median) is someone else
LOOK_ALIKE_DISTANCE = 0.5  # two subjects' photos this close (median) look like one person
MIN_PHOTOS_TO_COMPARE = 3
DESCRIPTOR_SIZE = 128


def descriptor_bytes(descriptor: np.ndarray) -> bytes:
    """A descriptor as it is stored: 128 little-endian float32 (512 bytes)."""
    return np.asarray(descriptor, dtype="<f4").reshape(DESCRIPTOR_SIZE).tobytes()


def descriptor_from_bytes(data: bytes) -> np.ndarray | None:
    """The stored form read back; None for anything that is not one descriptor."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) != DESCRIPTOR_SIZE * 4:
        return None
    vector = np.frombuffer(bytes(data), dtype="<f4").astype(np.float32)
    return vector if np.all(np.isfinite(vector)) else None


def distances(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """Euclidean distance of every descriptor in a to every one in b, as a len(a) x len(b) matrix."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    left, right = np.stack(a).astype(np.float64), np.stack(b).astype(np.float64)
    return np.linalg.norm(left[:, None, :] - right[None, :, :], axis=2)


def _agree(group: list[np.ndarray]) -> bool:
    """Whether these photos look like one person: their median pairwise distance is a same-person distance."""
    if len(group) < 2:
        return False
    matrix = distances(group, group)
    pairs = matrix[np.triu_indices(len(group), k=1)]
    return float(np.median(pairs)) < SAME_PERSON_DISTANCE


@dataclass(frozen=True)
class OddPhoto:
    number: int  # the new photo's number in its upload
    distance: float  # its median distance to the others
    others: tuple[int, ...]  # the upload's numbers it was compared with (not counting stored photos)
    stored: int  # how many stored photos it was compared with


def odd_photos(new: Sequence[tuple[int, np.ndarray]], stored: Sequence[np.ndarray] = ()) -> list[OddPhoto]:
    """The new photos that clearly show someone else than the rest, in upload order. `new` pairs each new
    photo's number with its descriptor; `stored` are the descriptors of the photos the subject already has."""
    everyone = [vector for _, vector in new] + list(stored)
    if len(everyone) < MIN_PHOTOS_TO_COMPARE:
        return []
    flagged: list[tuple[int, float]] = []
    for position, (number, vector) in enumerate(new):
        others = everyone[:position] + everyone[position + 1:]
        distance = float(np.median(distances([vector], others)[0]))
        if distance > DIFFERENT_PERSON_DISTANCE and _agree(others):
            flagged.append((number, distance))
    odd_numbers = {number for number, _ in flagged}
    kept = tuple(number for number, _ in new if number not in odd_numbers)
    return [OddPhoto(number, distance, kept, len(stored)) for number, distance in flagged]


def numbers_text(numbers: Sequence[int]) -> str:
    """'photo 1', 'photos 1 and 3', 'photos 1 to 4' (a run), 'photos 1, 3 and 6'."""
    numbers = sorted(numbers)
    if len(numbers) == 1:
        return f"photo {numbers[0]}"
    if len(numbers) > 2 and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"photos {numbers[0]} to {numbers[-1]}"
    return "photos " + ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"


def odd_photo_reason(odd: OddPhoto) -> str:
    """The rejection sentence (without the 'photo N (name): ' label)."""
    parts = []
    if odd.others:
        parts.append(numbers_text(odd.others))
    if odd.stored:
        parts.append(f"the {odd.stored} photo{'s' if odd.stored != 1 else ''} already stored")
    return (
        f"this looks like a different person from {' and '.join(parts)} (face distance {odd.distance:.2f}; over "
        f"{DIFFERENT_PERSON_DISTANCE} is someone else); use photos of one person only"
    )


def look_alike(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float | None:
    """The median distance between two subjects' photos when it says they look like one person, else None."""
    if not len(a) or not len(b):
        return None
    distance = float(np.median(distances(a, b)))
    return distance if distance < LOOK_ALIKE_DISTANCE else None
