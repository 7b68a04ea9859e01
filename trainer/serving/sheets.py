"""Image grids (count > 1) and labelled contact sheets (headshot packs), drawn with Pillow."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

GRID_GAP = 4
SHEET_THUMB = 256  # contact-sheet cell width in pixels
SHEET_MARGIN = 16
LABEL_LINES = 2
BACKGROUND = (255, 255, 255)
INK = (32, 32, 32)


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows): 2 -> 2x1, 3 -> 3x1, 4 -> 2x2, more -> as square as possible."""
    if count <= 3:
        return count, 1
    columns = math.ceil(math.sqrt(count))
    return columns, math.ceil(count / columns)


def make_grid(images: Sequence[Image.Image], gap: int = GRID_GAP) -> Image.Image:
    """All images in one picture, left to right then top to bottom, each cell the size of the first image."""
    if not images:
        raise ValueError("a grid needs at least one image")
    columns, rows = grid_shape(len(images))
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), BACKGROUND)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        cell = image if image.size == (width, height) else image.resize((width, height), Image.Resampling.LANCZOS)
        grid.paste(cell.convert("RGB"), (column * (width + gap), row * (height + gap)))
    return grid


def make_contact_sheet(images: Sequence[Image.Image], labels: Sequence[str], title: str = "",
                       thumb_width: int = SHEET_THUMB) -> Image.Image:
    """Thumbnails in a grid, each with its number and label underneath, and an optional title on top."""
    if not images or len(images) != len(labels):
        raise ValueError("a contact sheet needs one label per image")
    columns, rows = grid_shape(len(images))
    aspect = images[0].height / images[0].width
    thumb = (thumb_width, round(thumb_width * aspect))
    font = ImageFont.load_default(size=max(12, thumb_width // 16))
    line_height = _line_height(font)
    label_height = LABEL_LINES * line_height + 8
    title_height = line_height * 2 if title else 0
    cell_h = thumb[1] + label_height
    sheet = Image.new(
        "RGB",
        (columns * thumb[0] + (columns + 1) * SHEET_MARGIN, title_height + rows * cell_h + (rows + 1) * SHEET_MARGIN),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((SHEET_MARGIN, SHEET_MARGIN // 2), title, font=font, fill=INK)
    for index, (image, label) in enumerate(zip(images, labels)):
        row, column = divmod(index, columns)
        x = SHEET_MARGIN + column * (thumb[0] + SHEET_MARGIN)
        y = title_height + SHEET_MARGIN + row * (cell_h + SHEET_MARGIN)
        sheet.paste(image.convert("RGB").resize(thumb, Image.Resampling.LANCZOS), (x, y))
        lines = wrap_text(f"{index + 1}. {label}", font, thumb[0], draw)[:LABEL_LINES]
        for number, line in enumerate(lines):
            draw.text((x, y + thumb[1] + 4 + number * line_height), line, font=font, fill=INK)
    return sheet


def _line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Hgjy")
    return int((bottom - top) * 1.35) + 1


def wrap_text(text: str, font, max_width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap by measured width; a word longer than a line is cut with an ellipsis."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}".strip()
            if draw.textlength(candidate, font=font) <= max_width or not current:
                current = candidate
            else:
                lines.append(current)
                current = word
            while draw.textlength(current, font=font) > max_width and len(current) > 1:
                current = current[:-2] + "\u2026"
        lines.append(current)
    return lines
