"""Sample photos for trying Likeness without selfies: several photos of one person, made from scikit-image's
astronaut (Eileen Collins, a NASA photo in the public domain) by mirroring, turning, reframing and relighting it,
so they pass the same photo checks a real set would, the one-person check included.

`astronaut-1.jpg` to `astronaut-4.jpg` are for `train`, `selfie.jpg` for `photos add` afterwards (the README's
walkthrough uses both).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

Variant = Callable[[Image.Image], Image.Image]


def _turned(image: Image.Image, degrees: float) -> Image.Image:
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC)


def _closer(image: Image.Image, box: tuple[int, int, int, int], side: int) -> Image.Image:
    return image.crop(box).resize((side, side), Image.Resampling.LANCZOS)


VARIANTS: dict[str, Variant] = {
    "astronaut-1.jpg": lambda image: image,
    "astronaut-2.jpg": ImageOps.mirror,
    "astronaut-3.jpg": lambda image: ImageEnhance.Brightness(_turned(image, 8)).enhance(1.1),
    "astronaut-4.jpg": lambda image: _closer(image, (60, 0, 412, 352), 512),
    "selfie.jpg": lambda image: _closer(ImageEnhance.Contrast(_turned(ImageOps.mirror(image), 5)).enhance(0.9),
                                        (40, 0, 452, 412), 480),
}


def demo_photo_jpegs() -> list[tuple[str, bytes]]:
    """(file name, JPEG bytes) for each sample photo."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut()).convert("RGB")
    photos = []
    for name, variant in VARIANTS.items():
        buffer = io.BytesIO()
        variant(astronaut).convert("RGB").save(buffer, format="JPEG", quality=92)
        photos.append((name, buffer.getvalue()))
    return photos


def write_demo_photos(folder: Path) -> list[Path]:
    """The sample photos as files in `folder` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, jpeg in demo_photo_jpegs():
        path = folder / name
        path.write_bytes(jpeg)
        written.append(path)
    return written
