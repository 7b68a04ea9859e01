"""Holiday cards: a generated picture plus the greeting, typeset with Pillow's scalable default font.

Layouts (the bot's services pick the picture's aspect to match):
- portrait: 3:4 card, the picture on top, the greeting in a band below it;
- landscape: 4:3 card, the picture on the left, the greeting in a panel on the right;
- border: square card, the picture inset in a coloured frame, the greeting in the wide bottom frame.
The greeting gets the largest font size at which every line fits its box. The card PNG stays under 10 MiB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

from trainer.serving.sheets import wrap_text

LAYOUTS = ("portrait", "landscape", "border")
MAX_CARD_BYTES = 10 * 1024 * 1024
PAPER = (250, 246, 236)
INK = (128, 22, 32)
FRAME = (24, 70, 48)
FRAME_INK = (250, 246, 236)
MIN_FONT, MAX_FONT = 14, 160


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class CardLayout:
    size: tuple[int, int]
    picture: Box
    text: Box
    paper: tuple[int, int, int]
    ink: tuple[int, int, int]


def card_layout(layout: str, long_side: int = 1600) -> CardLayout:
    """Where the picture and the greeting go on a card whose longer side is `long_side` pixels."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown card layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    pad = long_side // 40
    if layout == "portrait":
        width, height = long_side * 3 // 4, long_side
        split = round(height * 0.76)
        return CardLayout((width, height), Box(pad, pad, width - pad, split), Box(pad, split + pad, width - pad,
                          height - pad), PAPER, INK)
    if layout == "landscape":
        width, height = long_side, long_side * 3 // 4
        split = round(width * 0.62)
        return CardLayout((width, height), Box(pad, pad, split, height - pad), Box(split + pad, pad, width - pad,
                          height - pad), PAPER, INK)
    side = long_side
    frame = side // 14
    split = round(side * 0.78)
    return CardLayout((side, side), Box(frame, frame, side - frame, split), Box(frame, split + pad, side - frame,
                      side - pad), FRAME, FRAME_INK)


def make_card(picture: Image.Image, greeting: str, layout: str, long_side: int = 1600) -> Image.Image:
    """The finished card: the picture cropped to fill its box, and the greeting centred in the text box."""
    spec = card_layout(layout, long_side)
    card = Image.new("RGB", spec.size, spec.paper)
    fitted = ImageOps.fit(picture.convert("RGB"), spec.picture.size, Image.Resampling.LANCZOS)
    card.paste(fitted, (spec.picture.left, spec.picture.top))
    draw_greeting(card, greeting, spec.text, spec.ink)
    return card


def fit_font(greeting: str, box: Box, draw: ImageDraw.ImageDraw) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """The largest default-font size (binary search) at which the wrapped greeting fits the box."""
    low, high = MIN_FONT, MAX_FONT
    best = (ImageFont.load_default(size=MIN_FONT), MIN_FONT)
    while low <= high:
        size = (low + high) // 2
        font = ImageFont.load_default(size=size)
        lines = wrap_text(greeting, font, box.width, draw)
        if _block_height(lines, font) <= box.height and all(draw.textlength(l, font=font) <= box.width for l in lines):
            best = (font, size)
            low = size + 1
        else:
            high = size - 1
    font = best[0]
    return font, wrap_text(greeting, font, box.width, draw)


def _line_step(font) -> int:
    top, bottom = font.getbbox("Hgjy")[1::2]
    return round((bottom - top) * 1.25)


def _block_height(lines: list[str], font) -> int:
    return _line_step(font) * len(lines)


def draw_greeting(card: Image.Image, greeting: str, box: Box, ink: tuple[int, int, int]) -> None:
    draw = ImageDraw.Draw(card)
    font, lines = fit_font(greeting, box, draw)
    step = _line_step(font)
    y = box.top + (box.height - step * len(lines)) // 2
    for line in lines:
        x = box.left + (box.width - draw.textlength(line, font=font)) / 2
        draw.text((x, y), line, font=font, fill=ink)
        y += step


def shrink_to_fit(card: Image.Image, encode: Callable[[Image.Image], bytes],
                  limit: int = MAX_CARD_BYTES) -> tuple[Image.Image, bytes]:
    """Encode the card; while the file is over `limit`, scale it down by 15% and try again."""
    data = encode(card)
    while len(data) >= limit and min(card.size) > 64:
        card = card.resize((round(card.width * 0.85), round(card.height * 0.85)), Image.Resampling.LANCZOS)
        data = encode(card)
    return card, data
