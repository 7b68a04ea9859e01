"""Holiday cards: a generated picture plus the greeting, typeset with Pillow's scalable default font (DejaVu Sans
for letters beyond ASCII, Noto Sans CJK for Japanese, Chinese and Korean) and colour emoji
(trainer/serving/greeting_fonts.py, intake/typefaces.py).

Every card has exactly its layout's shape (CARD_ASPECT) and a picture box of exactly its own shape (PICTURE_ASPECT),
which bot/services/cards.py asks the generator for (the generation presets are exact for these ratios on every
family), and one margin (a twentieth of the card's long side) separates picture, greeting and edges on every side.
- portrait: a 3:4 card, a square picture on top, the greeting in a band below it;
- landscape: a 4:3 card, a 3:4 picture on the left, the greeting in a panel on the right;
- border: a square card, a 4:3 picture inset in a coloured frame, the greeting in the frame below it.
A picture of another shape (a re-roll of a card made before the presets were exact) is scaled whole into the box
and centred, never cropped; the card keeps its shape. The greeting gets the largest font size at which it fits its
box, and its ink is centred there. The card PNG stays under 10 MiB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

from trainer.serving.greeting_fonts import GreetingFonts, greeting_fonts, typeface_for
from trainer.serving.sheets import wrap_text

LAYOUTS = ("portrait", "landscape", "border")
CARD_ASPECT = {"portrait": (3, 4), "landscape": (4, 3), "border": (1, 1)}  # width:height
PICTURE_ASPECT = {"portrait": (1, 1), "landscape": (3, 4), "border": (4, 3)}  # width:height
MARGINS_PER_LONG_SIDE = 20
MAX_CARD_BYTES = 10 * 1024 * 1024
PAPER = (250, 246, 236)
INK = (128, 22, 32)
FRAME = (24, 70, 48)
FRAME_INK = (250, 246, 236)
MIN_FONT, MAX_FONT = 14, 160
LINE_SPACING = 1.25


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
    margin: int


def card_layout(layout: str, long_side: int = 1600, picture_size: tuple[int, int] | None = None) -> CardLayout:
    """Where the picture box and the greeting go; both, and the card, have their layout's exact shapes.
    `picture_size` is accepted for callers that know the picture, but never changes the layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown card layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    margin = long_side // MARGINS_PER_LONG_SIDE
    card_w, card_h = CARD_ASPECT[layout]
    width, height = long_side * card_w // max(card_w, card_h), long_side * card_h // max(card_w, card_h)
    ratio_w, ratio_h = PICTURE_ASPECT[layout]
    if layout == "landscape":  # picture left, greeting right
        picture_h = height - 2 * margin
        picture = Box(margin, margin, margin + round(picture_h * ratio_w / ratio_h), margin + picture_h)
        text = Box(picture.right + margin, margin, width - margin, height - margin)
    else:  # picture on top, greeting below
        picture_w = width - 2 * margin
        picture = Box(margin, margin, margin + picture_w, margin + round(picture_w * ratio_h / ratio_w))
        text = Box(margin, picture.bottom + margin, width - margin, height - margin)
    paper, ink = (FRAME, FRAME_INK) if layout == "border" else (PAPER, INK)
    return CardLayout((width, height), picture, text, paper, ink, margin)


def fitted(picture_size: tuple[int, int], box: Box) -> Box:
    """The largest box of the picture's own shape inside `box`, centred: the whole picture, never cropped."""
    scale = min(box.width / picture_size[0], box.height / picture_size[1])
    width, height = min(box.width, round(picture_size[0] * scale)), min(box.height, round(picture_size[1] * scale))
    left, top = box.left + (box.width - width) // 2, box.top + (box.height - height) // 2
    return Box(left, top, left + width, top + height)


def make_card(picture: Image.Image, greeting: str, layout: str, long_side: int = 1600) -> Image.Image:
    """The finished card: the whole picture scaled into its box, and the greeting centred in the text box."""
    spec = card_layout(layout, long_side)
    card = Image.new("RGB", spec.size, spec.paper)
    place = fitted(picture.size, spec.picture)
    scaled = picture.convert("RGB").resize(place.size, Image.Resampling.LANCZOS)
    card.paste(scaled, (place.left, place.top))
    draw_greeting(card, greeting, spec.text, spec.ink)
    return card


def _line_step(fonts: GreetingFonts) -> int:
    top, bottom = fonts.text_font.getbbox("Hgjy")[1::2]
    return round((bottom - top) * LINE_SPACING)


def render_greeting(greeting: str, fonts: GreetingFonts, width: int, ink: tuple[int, int, int]) -> Image.Image | None:
    """The greeting wrapped to `width`, each line centred, on a transparent layer cropped to its ink; None when
    nothing visible is drawn."""
    lines = wrap_text(greeting, None, width, fonts)  # GreetingFonts measures like ImageDraw
    step = _line_step(fonts)
    ascent, descent = fonts.text_font.getmetrics()
    pad = fonts.size  # room for side bearings and tall emoji; cropped away below
    layer = Image.new("RGBA", (width + 2 * pad, step * len(lines) + ascent + descent + 2 * pad), (*ink, 0))
    draw = ImageDraw.Draw(layer)
    for index, line in enumerate(lines):
        x = pad + (width - fonts.textlength(line)) / 2
        fonts.draw_line(draw, x, pad + ascent + index * step, line, (*ink, 255))
    bbox = layer.getbbox()
    return layer.crop(bbox) if bbox else None


def fit_greeting(greeting: str, box: Box, ink: tuple[int, int, int]) -> Image.Image | None:
    """The greeting at the largest font size (binary search) at which its ink fits the box and no word is cut."""
    low, high, best, face = MIN_FONT, MAX_FONT, None, typeface_for(greeting)
    while low <= high:
        size = (low + high) // 2
        fonts = greeting_fonts(size, face)
        rendered = render_greeting(greeting, fonts, box.width, ink)
        if rendered is None:
            return None
        words_fit = all(fonts.textlength(word) <= box.width for word in greeting.split())
        if words_fit and rendered.width <= box.width and rendered.height <= box.height:
            best, low = rendered, size + 1
        else:
            high = size - 1
    if best is None:  # too long even at the smallest size: keep its middle
        rendered = render_greeting(greeting, greeting_fonts(MIN_FONT, face), box.width, ink)
        left, top = max(0, (rendered.width - box.width) // 2), max(0, (rendered.height - box.height) // 2)
        best = rendered.crop((left, top, left + min(rendered.width, box.width), top + min(rendered.height, box.height)))
    return best


def draw_greeting(card: Image.Image, greeting: str, box: Box, ink: tuple[int, int, int]) -> None:
    """Paint the fitted greeting in `ink`, emoji in their own colours, its ink centred in the box."""
    rendered = fit_greeting(greeting, box, ink)
    if rendered is not None:
        x = box.left + (box.width - rendered.width) // 2
        y = box.top + (box.height - rendered.height) // 2
        card.paste(rendered, (x, y), rendered)


def shrink_to_fit(card: Image.Image, encode: Callable[[Image.Image], bytes],
                  limit: int = MAX_CARD_BYTES) -> tuple[Image.Image, bytes]:
    """Encode the card; while the file is over `limit`, scale it down by 15% and try again."""
    data = encode(card)
    while len(data) >= limit and min(card.size) > 64:
        card = card.resize((round(card.width * 0.85), round(card.height * 0.85)), Image.Resampling.LANCZOS)
        data = encode(card)
    return card, data
