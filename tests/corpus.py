"""The photo corpus, built in memory: real photos from scikit-image and generated bad files.

Other test packages import it, e.g. `from tests.corpus import astronaut_jpeg, camera_jpeg, cat_jpeg`.
Every builder is cached and returns immutable bytes (or a read-only array).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageFilter
from skimage import data as skdata


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


@cache
def astronaut_rgb() -> np.ndarray:
    return _frozen(skdata.astronaut())


@cache
def camera_rgb() -> np.ndarray:
    """The cameraman, a face in profile, as RGB."""
    return _frozen(np.stack([skdata.camera()] * 3, axis=-1))


def encode(image: Image.Image | np.ndarray, fmt: str, **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg(pixels: np.ndarray, quality: int = 92, **options) -> bytes:
    return encode(pixels, "JPEG", quality=quality, **options)


@cache
def astronaut_jpeg() -> bytes:
    return jpeg(astronaut_rgb())


@cache
def astronaut_png() -> bytes:
    return encode(astronaut_rgb(), "PNG")


@cache
def astronaut_webp() -> bytes:
    return encode(astronaut_rgb(), "WEBP", quality=90)


def heic(pixels: np.ndarray, quality: int = 90) -> bytes:
    import pillow_heif

    buffer = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(pixels)).save(buffer, quality=quality)
    return buffer.getvalue()


@cache
def astronaut_heic() -> bytes:
    return heic(astronaut_rgb())


@cache
def astronaut_large_jpeg(side: int = 2048) -> bytes:
    """The astronaut upscaled so that her face passes the real families' 256 px minimum."""
    image = Image.fromarray(astronaut_rgb()).resize((side, side), Image.Resampling.LANCZOS)
    return jpeg(np.asarray(image))


@cache
def camera_jpeg() -> bytes:
    return jpeg(camera_rgb())


@cache
def cat_jpeg() -> bytes:
    return jpeg(skdata.chelsea())


@cache
def coffee_jpeg() -> bytes:
    return jpeg(skdata.coffee())


def empty_file() -> bytes:
    return b""


def text_file() -> bytes:
    return b"These are my holiday notes, not a photo.\nDay 1: beach.\n"


@cache
def truncated_jpeg() -> bytes:
    whole = astronaut_jpeg()
    return whole[: len(whole) // 2]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_claiming(width: int, height: int, valid_crc: bool = True) -> bytes:
    """A tiny PNG whose IHDR claims width x height RGB pixels (a decompression bomb's header)."""
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if not valid_crc:
        ihdr = ihdr[:-4] + bytes(4)
    idat = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + _png_chunk(b"IEND", b"")


@cache
def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(astronaut_rgb()).convert("CMYK"), "JPEG", quality=95)


@cache
def sixteen_bit_png() -> bytes:
    gray = np.asarray(Image.fromarray(astronaut_rgb()).convert("L")).astype(np.uint16) * 257
    return encode(Image.fromarray(gray), "PNG")


TRANSPARENT_BORDER_PX = 24


@cache
def palette_png_with_alpha() -> bytes:
    """The astronaut in 255 colours inside a transparent border (palette index with tRNS)."""
    key = (0, 255, 0)
    canvas = Image.new("RGB", (512 + 2 * TRANSPARENT_BORDER_PX,) * 2, key)
    canvas.paste(Image.fromarray(astronaut_rgb()).quantize(254).convert("RGB"), (TRANSPARENT_BORDER_PX,) * 2)
    palette = canvas.quantize(255)
    key_index = palette.getpixel((0, 0))
    return encode(palette, "PNG", transparency=key_index)


@cache
def animated_gif() -> bytes:
    """Two frames: the astronaut, then the coffee cup (no face). Only the first frame may be used."""
    frames = [Image.fromarray(astronaut_rgb()), Image.fromarray(skdata.coffee()[:512, :512])]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)


CAMERA_MAKER = "LikenessTestPhone"


def exif_with_gps(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = CAMERA_MAKER
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 7.5), 3: "E", 4: (4.0, 53.0, 1.0)}
    return exif


@cache
def exif_rotated_jpeg() -> bytes:
    """The astronaut stored lying on her side, with EXIF orientation 6 (rotate 90 degrees clockwise to view)
    and GPS coordinates that must not survive intake."""
    stored = Image.fromarray(astronaut_rgb()).transpose(Image.Transpose.ROTATE_90)
    return encode(stored, "JPEG", quality=95, exif=exif_with_gps(6))


@cache
def exif_rotated_heic() -> bytes:
    """The same as `exif_rotated_jpeg`, as an iPhone-style HEIC (pillow-heif stores the rotation as a transform)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    stored = Image.fromarray(astronaut_rgb()).transpose(Image.Transpose.ROTATE_90)
    return encode(stored, "HEIF", quality=90, exif=exif_with_gps(6).tobytes())


@cache
def tiny_image() -> bytes:
    return jpeg(astronaut_rgb()[60:100, 180:220])


@cache
def two_faces_jpeg() -> bytes:
    """Two copies of the astronaut's head side by side on one canvas."""
    head = astronaut_rgb()[20:300, 110:340]
    canvas = np.full((320, 2 * head.shape[1] + 60, 3), 200, dtype=np.uint8)
    canvas[20 : 20 + head.shape[0], 20 : 20 + head.shape[1]] = head
    canvas[20 : 20 + head.shape[0], 40 + head.shape[1] : 40 + 2 * head.shape[1]] = head
    return jpeg(canvas)


@cache
def duplicate_of_astronaut() -> bytes:
    """The astronaut re-encoded smaller and at lower quality: the same photo to a person."""
    smaller = Image.fromarray(astronaut_rgb()).resize((480, 480), Image.Resampling.LANCZOS)
    return jpeg(np.asarray(smaller), quality=70)


@cache
def blurry_jpeg() -> bytes:
    return jpeg(np.asarray(Image.fromarray(astronaut_rgb()).filter(ImageFilter.GaussianBlur(2.5))))


@cache
def slightly_soft_jpeg() -> bytes:
    return jpeg(np.asarray(Image.fromarray(astronaut_rgb()).filter(ImageFilter.GaussianBlur(1.0))), quality=95)


def scaled_exposure(pixels: np.ndarray, gain: float, offset: float = 0.0) -> np.ndarray:
    return np.clip(pixels.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


@cache
def dark_jpeg() -> bytes:
    """So dark that the face is barely there."""
    return jpeg(scaled_exposure(astronaut_rgb(), 0.15))


@cache
def dim_face_jpeg() -> bytes:
    """Dark, but the face is still found: rejected on the face's own exposure."""
    return jpeg(scaled_exposure(astronaut_rgb(), 0.3), quality=95)


@cache
def overexposed_jpeg() -> bytes:
    return jpeg(scaled_exposure(astronaut_rgb(), 1.6, 40))


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def _icc_rgb_profile(description: str, red, green, blue, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 matrix/TRC display profile with the given D50 colorants."""
    desc = description.encode() + b"\0"
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256))
    tags = [
        (b"desc", b"desc" + bytes(4) + struct.pack(">I", len(desc)) + desc + bytes(8 + 3 + 67)),
        (b"wtpt", _xyz_tag(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz_tag(*red)), (b"gXYZ", _xyz_tag(*green)), (b"bXYZ", _xyz_tag(*blue)),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, payload in tags:
        payload += bytes(-len(payload) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(payload))
        body += payload
    header = (
        struct.pack(">I", offset + len(body)) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
        + bytes(12) + b"acsp" + bytes(28) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + bytes(48)
    )
    return header + struct.pack(">I", len(tags)) + table + body


SRGB_COLORANTS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


@cache
def swapped_red_green_profile() -> bytes:
    """An RGB profile whose red and green primaries are sRGB's green and red: converting to sRGB swaps them."""
    red, green, blue = SRGB_COLORANTS
    return _icc_rgb_profile("Likeness test: red and green swapped", green, red, blue)


@cache
def astronaut_with_swapped_profile_jpeg() -> bytes:
    """The astronaut with red and green exchanged in the pixels, tagged with the profile that exchanges them back."""
    swapped = np.ascontiguousarray(astronaut_rgb()[..., [1, 0, 2]])
    return jpeg(swapped, quality=95, icc_profile=swapped_red_green_profile())


@cache
def bmp_file() -> bytes:
    return encode(astronaut_rgb(), "BMP")


@dataclass(frozen=True)
class CorpusCase:
    name: str  # the upload's filename
    data: bytes
    expected_code: str  # the verdict for the tiny-* families


def corpus_cases() -> list[CorpusCase]:
    """Every corpus file with its expected verdict code under `IntakeRules.for_family("tiny-sd15")`.
    Each is meant to be inspected on its own (the duplicate only duplicates the astronaut)."""
    return [
        CorpusCase("astronaut.jpg", astronaut_jpeg(), "ok"),
        CorpusCase("camera.jpg", camera_jpeg(), "ok"),
        CorpusCase("astronaut.png", astronaut_png(), "ok"),
        CorpusCase("astronaut.webp", astronaut_webp(), "ok"),
        CorpusCase("IMG_0001.HEIC", astronaut_heic(), "ok"),
        CorpusCase("cmyk.jpg", cmyk_jpeg(), "ok"),
        CorpusCase("grey16.png", sixteen_bit_png(), "ok"),
        CorpusCase("palette.png", palette_png_with_alpha(), "ok"),
        CorpusCase("animated.gif", animated_gif(), "ok"),
        CorpusCase("rotated.jpg", exif_rotated_jpeg(), "ok"),
        CorpusCase("IMG_0002.HEIC", exif_rotated_heic(), "ok"),
        CorpusCase("empty.jpg", empty_file(), "empty"),
        CorpusCase("notes.jpg", text_file(), "unsupported_format"),
        CorpusCase("scan.bmp", bmp_file(), "unsupported_format"),
        CorpusCase("cut.jpg", truncated_jpeg(), "corrupt"),
        CorpusCase("bomb.png", png_header_claiming(30000, 30000), "too_many_pixels"),
        CorpusCase("tiny.jpg", tiny_image(), "too_small"),
        CorpusCase("chelsea.jpg", cat_jpeg(), "no_face"),
        CorpusCase("coffee.jpg", coffee_jpeg(), "no_face"),
        CorpusCase("two.jpg", two_faces_jpeg(), "several_faces"),
        CorpusCase("blurry.jpg", blurry_jpeg(), "blurry"),
        CorpusCase("dark.jpg", dark_jpeg(), "too_dark"),
        CorpusCase("dim.jpg", dim_face_jpeg(), "too_dark"),
        CorpusCase("bright.jpg", overexposed_jpeg(), "too_bright"),
    ]
