"""The photos the benches train on: scikit-image's astronaut and cameraman as JPEGs, the set their published
figures were measured with (the console's `demo-photos` now gives several photos of one person instead)."""

from __future__ import annotations

import io

from PIL import Image
from skimage import data


def two_face_jpegs() -> list[tuple[str, bytes]]:
    """(file name, JPEG bytes) of the astronaut and the cameraman."""
    photos = []
    for name, pixels in (("astronaut.jpg", data.astronaut()), ("camera.jpg", data.camera())):
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert("RGB").save(buffer, format="JPEG", quality=92)
        photos.append((name, buffer.getvalue()))
    return photos
