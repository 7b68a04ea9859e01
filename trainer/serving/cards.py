"""Holiday cards: a generated picture plus the greeting, typeset with Pillow's scalable default font (DejaVu Sans
for letters beyond ASCII) and colour emoji (trainer/serving/greeting_fonts.py).

Each layout has a picture shape (PICTURE_ASPECT), which bot/services/cards.py asks the generator for, and the card
is built around the picture it gets: the picture is scaled whole, never cropped, and one margin (a twentieth of the
card's long side) separates picture, greeting and the card's edges on every side.
- portrait: 3:4, a square picture on top, the greeting in a band below it;
- landscape: 4:3, a 3:4 picture on the left, the greeting in a panel on the right;
- border: square, a 4:3 picture inset in a coloured frame, the greeting in the frame below it.
A picture of another shape (generation sizes are rounded to multiples of 16) changes the card's shape slightly,
never the picture's. The greeting gets the largest font size at which it fits its box, and its ink is centred
there. The card PNG stays under 10 MiB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

from trainer.serving.greeting_fonts import GreetingFonts, greeting_fonts, needs_wide_text_font
from trainer.serving.sheets import wrap_text

LAYOUTS = ("portrait", "landscape", "border")
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
    """Where the picture and the greeting go; `picture_size` (default: the layout's own shape) sets the picture's
    aspect. The greeting's box keeps its size whatever the picture's shape."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown card layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    margin = long_side // MARGINS_PER_LONG_SIDE
    ratio_w, ratio_h = PICTURE_ASPECT[layout]
    nominal = ratio_w / ratio_h
    aspect = picture_size[0] / picture_size[1] if picture_size else nominal
    if layout == "landscape":  # picture left, greeting right
        height = long_side * 3 // 4
        picture_h = height - 2 * margin
        text_w = long_side - 3 * margin - round(picture_h * nominal)
        picture = Box(margin, margin, margin + max(1, round(picture_h * aspect)), margin + picture_h)
        width = picture.right + margin + text_w + margin
        text = Box(picture.right + margin, margin, width - margin, height - margin)
    else:  # picture on top, greeting below
        width = long_side * 3 // 4 if layout == "portrait" else long_side
        picture_w = width - 2 * margin
        text_h = long_side - 3 * margin - round(picture_w / nominal)
        picture = Box(margin, margin, margin + picture_w, margin + max(1, round(picture_w / aspect)))
        height = picture.bottom + margin + text_h + margin
        text = Box(margin, picture.bottom + margin, width - margin, height - margin)
    paper, ink = (FRAME, FRAME_INK) if layout == "border" else (PAPER, INK)
    return CardLayout((width, height), picture, text, paper, ink, margin)


def make_card(picture: Image.Image, greeting: str, layout: str, long_side: int = 1600) -> Image.Image:
    """The finished card: the whole picture scaled into its box, and the greeting centred in the text box."""
    spec = card_layout(layout, long_side, picture.size)
    card = Image.new("RGB", spec.size, spec.paper)
    scaled = picture.convert("RGB").resize(spec.picture.size, Image.Resampling.LANCZOS)
    card.paste(scaled, (spec.picture.left, spec.picture.top))
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
    low, high, best, wide = MIN_FONT, MAX_FONT, None, needs_wide_text_font(greeting)
    while low <= high:
        size = (low + high) // 2
        fonts = greeting_fonts(size, wide)
        rendered = render_greeting(greeting, fonts, box.width, ink)
        if rendered is None:
            return None
        words_fit = all(fonts.textlength(word) <= box.width for word in greeting.split())
        if words_fit and rendered.width <= box.width and rendered.height <= box.height:
            best, low = rendered, size + 1
        else:
            high = size - 1
    if best is None:  # too long even at the smallest size: keep its middle
        rendered = render_greeting(greeting, greeting_fonts(MIN_FONT, wide), box.width, ink)
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
