"""Photo intake on the in-memory corpus: a specific verdict for every file, nothing prepared for rejected ones."""

from __future__ import annotations

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageFilter

from tests import corpus
from intake.faces import detect_faces
from intake.formats import PhotoRejected, decode_photo
from intake.quality import face_gray, judge_face_exposure, measure_sharpness
from intake.photos import display_filename, inspect_batch, inspect_photo, is_near_duplicate
from intake.rules import FAMILIES, IntakeRules

ROOT = Path(__file__).resolve().parents[2]
TINY = IntakeRules.for_family("tiny-sd15")
VERDICT_CODES = {
    "ok", "empty", "too_large_bytes", "too_many_pixels", "unsupported_format", "corrupt", "too_small", "no_face",
    "several_faces", "face_too_small", "blurry", "too_dark", "too_bright", "duplicate", "different_person",
    "internal_error",
}


def decode(png_or_jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png_or_jpeg)).convert("RGB"))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def upright_crop_256() -> np.ndarray:
    result = inspect_photo(corpus.astronaut_png(), "a.png", 1, IntakeRules.for_family("tiny-sd15", resolution=256))
    return decode(result.prepared.crop)


@pytest.mark.parametrize("case", corpus.corpus_cases(), ids=lambda case: case.name)
def test_every_corpus_file_gets_its_expected_verdict(case):
    result = inspect_photo(case.data, case.name, 3, TINY)
    verdict = result.verdict
    assert verdict.code == case.expected_code, verdict.message
    assert verdict.accepted == (case.expected_code == "ok")
    assert (result.prepared is not None) == verdict.accepted
    assert verdict.message.startswith(f"photo 3 ({case.name}): ")
    assert len(verdict.message) > len(f"photo 3 ({case.name}): ") + 10
    assert verdict.index == 3 and verdict.filename == case.name


@pytest.mark.parametrize("name", ["astronaut.jpg", "camera.jpg"])
def test_real_photos_give_a_square_crop_at_the_family_resolution_containing_the_face(name):
    data = corpus.astronaut_jpeg() if name.startswith("astronaut") else corpus.camera_jpeg()
    result = inspect_photo(data, name, 1, TINY)
    prepared = result.prepared
    crop = Image.open(io.BytesIO(prepared.crop))
    assert crop.format == "PNG" and crop.size == (64, 64) and crop.mode == "RGB"
    assert (prepared.width, prepared.height) == (512, 512)
    x, y, w, h = prepared.face_box
    assert w >= TINY.min_face_px and x >= 0 and x + w <= 512 and y >= 0 and y + h <= 512

    big = inspect_photo(data, name, 1, IntakeRules.for_family("tiny-sd15", resolution=256)).prepared
    assert detect_faces(decode(big.crop)), "the crop should still show the face"


def test_real_families_accept_a_large_photo_and_crop_at_their_resolution():
    sd15 = inspect_photo(corpus.astronaut_large_jpeg(), "big.jpg", 1, IntakeRules.for_family("sd15"))
    assert sd15.verdict.code == "ok" and not sd15.verdict.warnings, sd15.verdict
    assert Image.open(io.BytesIO(sd15.prepared.crop)).size == (512, 512)
    smaller = corpus.astronaut_large_jpeg(1536)  # the crop around a ~290 px face must be enlarged for SDXL
    sdxl = inspect_photo(smaller, "big.jpg", 1, IntakeRules.for_family("sdxl"))
    assert sdxl.verdict.code == "ok" and any("enlarged to 1024 px" in w for w in sdxl.verdict.warnings)
    assert Image.open(io.BytesIO(sdxl.prepared.crop)).size == (1024, 1024)


def test_a_face_is_big_enough_when_its_crop_reaches_the_resolution_with_a_modest_upscale():
    """Issue 13: a 1152 px photo with a ~205 px face makes a ~530 px crop, more than sd15's 512: accepted. The
    512 px original (a ~91 px face, a ~237 px crop, over 2x enlargement) is refused, and the message says why."""
    sd15 = IntakeRules.for_family("sd15")
    assert (sd15.min_crop_px, sd15.min_face_px) == (342, 132)  # 512 / 1.5, and that over 2.6 face widths
    big = inspect_photo(corpus.astronaut_large_jpeg(1152), "IMG_2230.jpg", 1, sd15)
    assert big.verdict.code == "ok" and not big.verdict.warnings, big.verdict
    assert 180 <= big.prepared.face_box[2] < sd15.min_face_px * 2
    verdict = inspect_photo(corpus.astronaut_jpeg(), "IMG_2231.jpg", 2, sd15).verdict
    assert verdict.code == "face_too_small" and verdict.message.startswith("photo 2 (IMG_2231.jpg):")
    for words in ("crop around it is", "sd15 trains at 512 px", "enlarged at most 1.5x", "at least 342 px"):
        assert words in verdict.message, verdict.message


def test_exif_rotated_photo_comes_out_upright(upright_crop_256):
    rules = IntakeRules.for_family("tiny-sd15", resolution=256)
    rotated = inspect_photo(corpus.exif_rotated_jpeg(), "rotated.jpg", 1, rules).prepared
    crop = decode(rotated.crop)
    assert detect_faces(crop, profiles=False), "an upright frontal face is found in the crop"
    # The face box may differ by a pixel from the upright photo's, so compare orientations rather than pixels.
    by_turns = [mean_abs_diff(np.rot90(crop, turns), upright_crop_256) for turns in range(4)]
    assert by_turns[0] < 0.5 * min(by_turns[1:]), by_turns
    original = decode(rotated.original)
    assert original.shape == (512, 512, 3)
    assert mean_abs_diff(original, corpus.astronaut_rgb()) < 6


def test_stored_original_has_no_exif_gps_or_maker():
    prepared = inspect_photo(corpus.exif_rotated_jpeg(), "rotated.jpg", 1, TINY).prepared
    assert corpus.CAMERA_MAKER.encode() in corpus.exif_rotated_jpeg()  # the upload does carry them
    stored = Image.open(io.BytesIO(prepared.original))
    assert prepared.original_ext == "jpg" and stored.format == "JPEG"
    assert len(stored.getexif()) == 0 and stored.getexif().get_ifd(0x8825) == {}
    assert b"Exif" not in prepared.original and corpus.CAMERA_MAKER.encode() not in prepared.original
    assert "exif" not in stored.info and "xmp" not in stored.info and "icc_profile" not in stored.info


def test_sha256_and_phash_describe_the_stored_original():
    import hashlib

    prepared = inspect_photo(corpus.astronaut_png(), "a.png", 1, TINY).prepared
    assert prepared.original_ext == "png" and Image.open(io.BytesIO(prepared.original)).format == "PNG"
    assert prepared.sha256 == hashlib.sha256(prepared.original).hexdigest()
    assert len(prepared.phash) == 16 and int(prepared.phash, 16) >= 0


def test_cmyk_is_converted_to_matching_rgb(upright_crop_256):
    rules = IntakeRules.for_family("tiny-sd15", resolution=256)
    crop = decode(inspect_photo(corpus.cmyk_jpeg(), "cmyk.jpg", 1, rules).prepared.crop)
    assert mean_abs_diff(crop, upright_crop_256) < 12


def test_embedded_colour_profile_is_converted_to_srgb():
    red = corpus.encode(Image.new("RGB", (8, 8), (255, 0, 0)), "PNG", icc_profile=corpus.swapped_red_green_profile())
    assert tuple(decode_photo(red, 10_000).pixels[0, 0]) == (0, 255, 0)
    prepared = inspect_photo(corpus.astronaut_with_swapped_profile_jpeg(), "p3.jpg", 1, TINY).prepared
    assert mean_abs_diff(decode(prepared.original), corpus.astronaut_rgb()) < 8  # gamma 2.2, not sRGB
    assert b"Likeness test" not in prepared.original  # the profile itself is not kept


def test_sixteen_bit_grey_is_scaled_to_eight_bit():
    prepared = inspect_photo(corpus.sixteen_bit_png(), "grey16.png", 1, TINY).prepared
    original = decode(prepared.original)
    expected = np.asarray(Image.fromarray(corpus.astronaut_rgb()).convert("L"))
    assert np.array_equal(original[..., 0], original[..., 1])
    assert mean_abs_diff(original[..., 0], expected) < 1.0  # not 1/257 as dark, not clipped white


def test_palette_transparency_is_flattened_on_white():
    prepared = inspect_photo(corpus.palette_png_with_alpha(), "palette.png", 1, TINY).prepared
    original = decode(prepared.original)
    border = corpus.TRANSPARENT_BORDER_PX
    assert (original[:border] == 255).all() and (original[:, :border] == 255).all()
    assert mean_abs_diff(original[border:-border, border:-border], corpus.astronaut_rgb()) < 12


def test_animated_gif_uses_its_first_frame():
    prepared = inspect_photo(corpus.animated_gif(), "animated.gif", 1, TINY).prepared
    assert prepared.original_ext == "png"
    assert mean_abs_diff(decode(prepared.original), corpus.astronaut_rgb()) < 12


def test_rotated_heic_with_gps_comes_out_upright_and_clean():
    data = corpus.exif_rotated_heic()
    assert corpus.CAMERA_MAKER.encode() in data
    prepared = inspect_photo(data, "IMG_0002.HEIC", 1, IntakeRules.for_family("tiny-sd15", resolution=256)).prepared
    assert detect_faces(decode(prepared.crop), profiles=False)
    assert corpus.CAMERA_MAKER.encode() not in prepared.original and b"Exif" not in prepared.original


def test_heic_is_accepted_and_stored_as_jpeg():
    data = corpus.astronaut_heic()
    assert data[4:12] == b"ftypheic"
    result = inspect_photo(data, "IMG_0001.HEIC", 1, TINY)
    assert result.verdict.code == "ok"
    assert result.prepared.original_ext == "jpg"
    assert mean_abs_diff(decode(result.prepared.original), corpus.astronaut_rgb()) < 8


def test_decompression_bomb_is_rejected_from_the_header_without_decoding(monkeypatch):
    def refuse_to_decode(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)
    bomb = corpus.png_header_claiming(30000, 30000)
    assert len(bomb) < 200
    verdict = inspect_photo(bomb, "bomb.png", 1, TINY).verdict
    assert verdict.code == "too_many_pixels" and "900 MP" in verdict.message
    # Under Pillow's own limit but over ours: our check names the claimed size.
    verdict = inspect_photo(corpus.png_header_claiming(9000, 9000), "big.png", 2, TINY).verdict
    assert verdict.code == "too_many_pixels" and "9000x9000" in verdict.message and "64 MP" in verdict.message


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"%PDF-1.4\n%\xe2\xe3", "a PDF document"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "a video"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "an SVG drawing"),
        (b"II*\x00\x08\x00\x00\x00", "a TIFF image"),
        (bytes(range(256)), "not an image we can read"),
    ],
)
def test_unsupported_files_say_what_they_are(data, words):
    verdict = inspect_photo(data, "upload.jpg", 1, TINY).verdict
    assert verdict.code == "unsupported_format" and words in verdict.message
    assert verdict.message.endswith("upload a JPEG, PNG, WebP or HEIC photo")


def test_damaged_png_header_is_corrupt_not_a_crash():
    verdict = inspect_photo(corpus.png_header_claiming(300, 300, valid_crc=False), "bad.png", 1, TINY).verdict
    assert verdict.code == "corrupt"


def test_byte_limit_is_checked_first():
    rules = IntakeRules.for_family("tiny-sd15", max_bytes=10_240)
    verdict = inspect_photo(corpus.astronaut_jpeg(), "a.jpg", 1, rules).verdict
    assert verdict.code == "too_large_bytes" and "over the 10 KiB limit" in verdict.message
    huge = b"\xff\xd8\xff" + bytes(11 * 1024 * 1024)
    verdict = inspect_photo(huge, "huge.jpg", 1, TINY).verdict
    assert verdict.code == "too_large_bytes" and "10.0 MiB limit" in verdict.message


def test_duplicates_within_a_batch_name_the_first_photo():
    files = [
        ("a.jpg", corpus.astronaut_jpeg()),
        ("cam.jpg", corpus.camera_jpeg()),
        ("again.jpg", corpus.duplicate_of_astronaut()),
    ]
    results = inspect_batch(files, TINY)
    assert [r.verdict.code for r in results] == ["ok", "ok", "duplicate"]
    assert [r.verdict.index for r in results] == [1, 2, 3]
    assert results[2].prepared is None
    assert "photo 1 (a.jpg)" in results[2].verdict.message


def test_duplicate_of_a_photo_the_subject_already_has():
    known = inspect_photo(corpus.astronaut_jpeg(), "a.jpg", 1, TINY).prepared.phash
    result = inspect_photo(corpus.duplicate_of_astronaut(), "again.jpg", 1, TINY, known_phashes=[known])
    assert result.verdict.code == "duplicate" and result.prepared is None
    assert inspect_photo(corpus.camera_jpeg(), "cam.jpg", 2, TINY, known_phashes=[known]).verdict.code == "ok"


def test_rejected_photo_does_not_count_as_a_batch_duplicate():
    files = [("blurry.jpg", corpus.blurry_jpeg()), ("a.jpg", corpus.astronaut_jpeg())]
    assert [r.verdict.code for r in inspect_batch(files, TINY)] == ["blurry", "ok"]


def test_near_duplicate_hashes():
    a = inspect_photo(corpus.astronaut_jpeg(), "a.jpg", 1, TINY).prepared.phash
    b = inspect_photo(corpus.camera_jpeg(), "b.jpg", 1, TINY).prepared.phash
    assert is_near_duplicate(a, a) and not is_near_duplicate(a, b)
    flipped = format(int(a, 16) ^ 0b111, "016x")  # three bits differ
    assert is_near_duplicate(a, flipped, max_distance=3) and not is_near_duplicate(a, flipped, max_distance=2)
    assert not is_near_duplicate(a, "not-a-hash") and not is_near_duplicate(a, "abc")


def test_slight_blur_is_a_warning_not_a_rejection():
    verdict = inspect_photo(corpus.slightly_soft_jpeg(), "soft.jpg", 4, TINY).verdict
    assert verdict.code == "ok"
    assert any(w.startswith("photo 4 (soft.jpg): ") and "soft" in w for w in verdict.warnings)


@pytest.fixture(scope="module")
def astronaut_face_gray() -> np.ndarray:
    face = detect_faces(corpus.astronaut_rgb())[0]
    return face_gray(corpus.astronaut_rgb(), face)


@pytest.mark.parametrize(
    ("gain", "offset", "outcome"),
    [(1.0, 0, "fine"), (0.5, 0, "warn"), (0.3, 0, "too_dark"), (1.15, 25, "warn"), (1.6, 40, "too_bright")],
)
def test_face_exposure_is_judged_on_the_face(astronaut_face_gray, gain, offset, outcome):
    face = corpus.scaled_exposure(astronaut_face_gray, gain, offset)
    if outcome in ("too_dark", "too_bright"):
        with pytest.raises(PhotoRejected) as rejected:
            judge_face_exposure(face, TINY)
        assert rejected.value.code == outcome
    else:
        assert len(judge_face_exposure(face, TINY)) == (1 if outcome == "warn" else 0)


def test_sharpness_ignores_contrast_but_not_blur(astronaut_face_gray):
    sharp = measure_sharpness(astronaut_face_gray)
    dim = measure_sharpness(corpus.scaled_exposure(astronaut_face_gray, 0.5))
    blurred = measure_sharpness(np.asarray(Image.fromarray(astronaut_face_gray).filter(ImageFilter.GaussianBlur(2))))
    assert dim == pytest.approx(sharp, rel=0.25)
    assert blurred < TINY.blur_reject < TINY.blur_warn < sharp


def test_pets_skip_face_detection_and_crop_the_centre():
    result = inspect_photo(corpus.cat_jpeg(), "chelsea.jpg", 1, IntakeRules.for_family("tiny-sd15", require_face=False))
    assert result.verdict.code == "ok"
    assert result.prepared.face_box == ((451 - 300) // 2, 0, 300, 300)


def test_margin_is_configurable():
    tight = inspect_photo(corpus.astronaut_png(), "a.png", 1, IntakeRules.for_family("tiny-sd15", margin=0.2)).prepared
    loose = inspect_photo(corpus.astronaut_png(), "a.png", 1, IntakeRules.for_family("tiny-sd15", margin=1.2)).prepared
    assert tight.face_box == loose.face_box
    # With a tight margin the face fills more of the crop, so fewer crop pixels are the light background.
    tight_bg = (decode(tight.crop).mean(axis=2) > 170).mean()
    loose_bg = (decode(loose.crop).mean(axis=2) > 170).mean()
    assert tight_bg < loose_bg


def test_rules_per_family():
    assert {f: IntakeRules.for_family(f).resolution for f in FAMILIES} == {
        "sd15": 512, "flux": 512, "sdxl": 1024, "tiny-sd15": 64, "tiny-sdxl": 64, "tiny-flux": 64,
    }
    assert IntakeRules.for_family("sd15").min_crop_px == 342 and IntakeRules.for_family("sdxl").min_crop_px == 683
    assert IntakeRules.for_family("sd15").max_pixels >= 50_000_000  # 48-50 MP phone photos pass
    assert IntakeRules.for_family("sd15", margin=1.0).margin == 1.0
    with pytest.raises(ValueError, match="unknown model family"):
        IntakeRules.for_family("sd3")
    with pytest.raises(ValueError):
        IntakeRules.for_family("sd15", resolution=0)


def test_displayed_filename_is_sanitised():
    assert display_filename("IMG_2231.HEIC") == "IMG_2231.HEIC"
    assert display_filename("bad\x00name\u202e\u200b.jpg") == "bad name .jpg"
    assert display_filename("../../etc/passwd") == "passwd"
    assert display_filename("C:\\Users\\me\\selfie.png") == "selfie.png"
    assert display_filename("") == display_filename(None) == "unnamed"
    long = display_filename("x" * 300 + ".jpeg")
    assert len(long) == 60 and long.endswith("\u2026.jpeg")
    verdict = inspect_photo(b"", "evil\nname\x1b[31m.jpg", 1, TINY).verdict
    assert "\n" not in verdict.message and "\x1b" not in verdict.message


def test_concurrent_intake_gives_the_same_verdicts():
    files = [(c.name, c.data) for c in corpus.corpus_cases() if c.name.endswith((".jpg", ".gif", ".HEIC"))][:5]
    sequential = [inspect_photo(data, name, 1, TINY) for name, data in files]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda item: inspect_photo(item[1], item[0], 1, TINY), files))
    assert [r.verdict for r in parallel] == [r.verdict for r in sequential]
    boxes = [[r.prepared and r.prepared.face_box for r in results] for results in (parallel, sequential)]
    assert boxes[0] == boxes[1]


FUZZ_FACE = np.ascontiguousarray(corpus.astronaut_rgb()[40:200, 150:310])
FUZZ_JPEG = corpus.jpeg(FUZZ_FACE)
FUZZ_SEEDS = {
    "jpeg": FUZZ_JPEG,
    "png": corpus.encode(FUZZ_FACE, "PNG"),
    "webp": corpus.encode(FUZZ_FACE, "WEBP"),
    "gif": corpus.encode(FUZZ_FACE, "GIF"),
    "heic": corpus.heic(FUZZ_FACE),
    "bomb": corpus.png_header_claiming(30000, 30000),
}
FUZZ_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_is_a_verdict(result):
    assert result.verdict.code in VERDICT_CODES
    assert result.verdict.code != "internal_error", result.verdict.message
    assert (result.prepared is not None) == result.verdict.accepted


@FUZZ_SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(data):
    _assert_is_a_verdict(inspect_photo(data, "fuzz.jpg", 1, TINY))


@FUZZ_SETTINGS
@given(st.integers(min_value=0, max_value=len(FUZZ_JPEG)))
def test_truncated_jpeg_never_raises(length):
    _assert_is_a_verdict(inspect_photo(FUZZ_JPEG[:length], "cut.jpg", 1, TINY))


@FUZZ_SETTINGS
@given(st.sampled_from(sorted(FUZZ_SEEDS)), st.data())
def test_corrupted_bytes_never_raise(kind, data):
    buffer = bytearray(FUZZ_SEEDS[kind])
    for _ in range(data.draw(st.integers(1, 8))):
        buffer[data.draw(st.integers(0, len(buffer) - 1))] = data.draw(st.integers(0, 255))
    _assert_is_a_verdict(inspect_photo(bytes(buffer), "flip.jpg", 1, TINY))


def test_intake_modules_do_not_import_torch():
    code = (
        "import sys, intake.photos, intake.triggers, intake.captions, intake.faces;"
        "assert 'torch' not in sys.modules, 'torch imported';"
        "assert 'transformers' not in sys.modules, 'transformers imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
