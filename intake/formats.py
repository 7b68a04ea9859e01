"""Decoding uploads safely: format sniffing, header-first size guards, orientation, RGB conversion, re-encoding.

Every failure is raised as `PhotoRejected(code, reason)`; `intake.photos` turns it into a verdict.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

# Pillow opener ids we decode (AVIF only where Pillow was built with it). Phone JPEGs that carry a second, preview
# image open through the JPEG opener as format "MPO".
DECODED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "HEIF", "AVIF")
LOSSLESS_FORMATS = frozenset({"PNG", "GIF"})
SUPPORTED_HINT = "upload a JPEG, PNG, WebP or HEIC photo"
DAMAGED = "the file is damaged and cannot be read; upload the photo again, or export it as a JPEG"
JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 4  # level 9 is several times slower for a few percent
WHITE = (255, 255, 255, 255)
EXIF_ORIENTATION = 0x0112

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_VIDEO_BRANDS = {b"isom", b"iso2", b"mp41", b"mp42", b"qt  ", b"M4V ", b"3gp4", b"3gp5", b"avc1", b"dash"}
_OTHER_SIGNATURES = (
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"8BPS", "a Photoshop file"),
    (b"\x00\x00\x01\x00", "an icon file"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1a\x45\xdf\xa3", "a video"),
)


class PhotoRejected(Exception):
    """A photo failed a check; `reason` is the part of the sentence after `photo N (name): `."""

    def __init__(self, code: str, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class DecodedPhoto:
    image: Image.Image  # RGB, oriented, no metadata of its own
    pixels: np.ndarray  # the same pixels, H x W x 3 uint8
    source_format: str  # Pillow's format id
    lossless: bool


def _is_supported_signature(head: bytes) -> bool:
    return (
        head.startswith(b"\xff\xd8\xff")
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or head.startswith((b"GIF87a", b"GIF89a"))
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or (head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS)
    )


def describe_unknown(head: bytes) -> str | None:
    """What an undecodable file that is not a damaged supported image looks like, for the message."""
    for signature, name in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return name
    if head[4:8] == b"ftyp" and head[8:12] in _VIDEO_BRANDS:
        return "a video"
    stripped = head.lstrip()
    if stripped[:5].lower() in (b"<svg ", b"<?xml") or stripped[:4].lower() == b"<svg":
        return "an SVG drawing"
    text = head.decode("utf-8", errors="ignore")  # the cut may split a character at the end
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if text and len(text.encode()) >= 0.9 * len(head) and printable / len(text) > 0.95:
        return "a text file"
    return None


_openers_lock = threading.Lock()
_openers: tuple[str, ...] | None = None


def _available_openers() -> tuple[str, ...]:
    """Register the HEIF opener once per process and list the DECODED_FORMATS this Pillow can open."""
    global _openers
    with _openers_lock:
        if _openers is None:
            try:
                import pillow_heif

                pillow_heif.register_heif_opener()
            except ImportError:  # HEIC photos then get an unsupported-format verdict, not a crash
                log.warning("pillow-heif is not installed; HEIC photos will be rejected")
            Image.init()
            _openers = tuple(name for name in DECODED_FORMATS if name in Image.OPEN)
        return _openers


def size_text(size: int) -> str:
    """A file size for people: `820 KiB`, `12.5 MiB`."""
    return f"{size / (1024 * 1024):.1f} MiB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KiB"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f} MP" if pixels >= 1e6 else f"{pixels / 1e6:.1f} MP"


def open_header(data: bytes, max_pixels: int) -> Image.Image:
    """Open lazily (the header only) and enforce the pixel limit before anything is decoded."""
    openers = _available_openers()
    head = data[:64]
    try:
        image = Image.open(io.BytesIO(data), formats=openers)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning, if made an error
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({_megapixels(int(claimed.group(1)))})" if claimed else ""
        raise PhotoRejected(
            "too_many_pixels",
            f"the image is far too large{size}, over the {_megapixels(max_pixels)} limit; "
            "send a resized copy",
        ) from None
    except UnidentifiedImageError:
        if _is_supported_signature(head):
            raise PhotoRejected("corrupt", DAMAGED) from None
        what = describe_unknown(head)
        reason = f"this file is {what}, not a photo" if what else "this file is not an image we can read"
        reason = f"{reason}; {SUPPORTED_HINT}"
        raise PhotoRejected("unsupported_format", reason) from None
    except Exception:  # Pillow raises many types (SyntaxError, struct.error, ...) on malformed headers
        raise PhotoRejected("corrupt", DAMAGED) from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise PhotoRejected(
            "too_many_pixels",
            f"the image is {width}x{height} ({_megapixels(width * height)}), over the {_megapixels(max_pixels)} "
            "limit; send a resized copy",
        )
    if width <= 0 or height <= 0:
        raise PhotoRejected("corrupt", "the file claims to be an image with no pixels; upload the photo again")
    return image


def decode_first_frame(image: Image.Image) -> None:
    """Decode the pixels of the first frame in place; truncated or broken data becomes a 'corrupt' verdict."""
    try:
        image.seek(0)
        image.load()
    except MemoryError:
        raise PhotoRejected("too_many_pixels", "the image is too large to process; send a resized copy") from None
    except Exception:
        raise PhotoRejected(
            "corrupt", "the file is incomplete or damaged (it stops partway); upload the original photo again"
        ) from None


def apply_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF orientation says. Broken EXIF leaves the image as it is."""
    try:
        if image.getexif().get(EXIF_ORIENTATION, 1) == 1:
            return image  # exif_transpose would copy the whole photo for nothing
        return ImageOps.exif_transpose(image)
    except Exception:
        log.info("ignoring unreadable EXIF orientation", exc_info=True)
        return image


def _embedded_profile(icc: bytes | None, colour_space: str) -> ImageCms.ImageCmsProfile | None:
    """The embedded ICC profile when it describes `colour_space` and is not plain sRGB already."""
    if not icc:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if profile.profile.xcolor_space.strip() != colour_space:
            return None
        if colour_space == "RGB" and "srgb" in (ImageCms.getProfileDescription(profile) or "").lower():
            return None
        return profile
    except Exception:
        log.info("ignoring unreadable ICC profile", exc_info=True)
        return None


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB or CMYK to sRGB, through the embedded profile when there is one (iPhone photos are Display P3)."""
    profile = _embedded_profile(icc, image.mode)
    if profile is not None:
        try:
            srgb = ImageCms.createProfile("sRGB")  # per call: LittleCMS profiles are not shared across threads
            return ImageCms.profileToProfile(image, profile, srgb, outputMode="RGB")
        except Exception:
            log.info("colour conversion failed; converting without the profile", exc_info=True)
    return image if image.mode == "RGB" else image.convert("RGB")


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float32)
    if image.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values / 257.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any decoded mode: 16-bit and float grey, palette, CMYK, alpha flattened on white."""
    icc = image.info.get("icc_profile")
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        image = _sixteen_bit_to_l(image) if image.mode != "F" else image.convert("L")
    if _has_alpha(image):
        canvas = Image.new("RGBA", image.size, WHITE)
        canvas.alpha_composite(image.convert("RGBA"))
        return _to_srgb(canvas.convert("RGB"), icc)
    if image.mode in ("RGB", "CMYK"):
        return _to_srgb(image, icc)
    return _to_srgb(image.convert("RGB"), None if image.mode in ("L", "1") else icc)


def decode_photo(data: bytes, max_pixels: int) -> DecodedPhoto:
    """Open, guard, decode, orient and convert an upload to a metadata-free RGB image."""
    image = open_header(data, max_pixels)
    source_format = image.format or "unknown"
    decode_first_frame(image)
    lossless = source_format in LOSSLESS_FORMATS or (source_format == "WEBP" and data[12:16] == b"VP8L")
    try:
        oriented = apply_orientation(image)
        rgb = to_rgb(oriented)
        pixels = np.asarray(rgb, dtype=np.uint8)
        clean = Image.fromarray(pixels, "RGB")  # a fresh image carries no EXIF, XMP or ICC
    except MemoryError:
        raise PhotoRejected("too_many_pixels", "the image is too large to process; send a resized copy") from None
    except Exception:
        log.info("colour conversion failed for a %s image in mode %s", source_format, image.mode, exc_info=True)
        raise PhotoRejected("corrupt", f"the image's colour data cannot be converted; {SUPPORTED_HINT}") from None
    return DecodedPhoto(image=clean, pixels=pixels, source_format=source_format, lossless=lossless)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encode_original(decoded: DecodedPhoto) -> tuple[bytes, str]:
    """The stored copy: PNG for lossless sources, a high-quality JPEG otherwise; no metadata either way."""
    if decoded.lossless:
        return encode_png(decoded.image), "png"
    buffer = io.BytesIO()
    decoded.image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), "jpg"
