"""Holiday cards: the greeting the worker typesets, and the layout, which also picks the picture's shape.

Each layout's picture box has its own shape (trainer/serving/cards.py PICTURE_ASPECT: a square picture above the
greeting on a portrait card, a 3:4 one beside it on a landscape card, a 4:3 one inside the border), and the card's
picture is generated at that aspect, so the worker never has to crop it."""

from __future__ import annotations

import unicodedata

from bot.services.errors import ServiceError

MAX_GREETING_CHARS = 120
MAX_GREETING_LINES = 3
LAYOUTS = {"portrait": "square", "landscape": "portrait", "border": "landscape"}  # layout -> picture's aspect preset
DEFAULT_LAYOUT = "portrait"


def clean_greeting(raw: object) -> str:
    """One to three lines of visible text: invisible and control characters removed, spaces collapsed."""
    if not isinstance(raw, str):
        raise ServiceError("bad_greeting", "The greeting must be text.")
    if len(raw) > 20 * MAX_GREETING_CHARS:
        raise ServiceError(
            "greeting_too_long", f"The greeting is {len(raw)} characters long; keep it under {MAX_GREETING_CHARS}."
        )
    text = unicodedata.normalize("NFKC", raw).replace("\r\n", "\n")
    lines = []
    for line in text.split("\n"):
        visible = "".join(ch for ch in line if not unicodedata.category(ch).startswith("C"))
        visible = " ".join(visible.split())
        if visible:
            lines.append(visible)
    if not lines:
        raise ServiceError("empty_greeting", "The greeting is empty; write the words for the card, e.g. `Happy holidays!`.")
    if len(lines) > MAX_GREETING_LINES:
        raise ServiceError("greeting_too_long", f"Keep the greeting to {MAX_GREETING_LINES} lines or fewer.")
    greeting = "\n".join(lines)
    if len(greeting) > MAX_GREETING_CHARS:
        raise ServiceError(
            "greeting_too_long",
            f"The greeting is {len(greeting)} characters long; keep it under {MAX_GREETING_CHARS} so it fits the card.",
        )
    return greeting


def validate_layout(raw: object) -> str:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return DEFAULT_LAYOUT
    layout = raw.strip().lower() if isinstance(raw, str) and len(raw) <= 20 else ""
    if layout not in LAYOUTS:
        raise ServiceError("bad_layout", f"The card layout must be one of {', '.join(LAYOUTS)}.")
    return layout
