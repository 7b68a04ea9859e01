"""Holiday cards: the greeting the worker typesets, and the layout, which also picks the picture's shape.

Each layout's picture box has its own shape (trainer/serving/cards.py PICTURE_ASPECT: a square picture above the
greeting on a portrait card, a 3:4 one beside it on a landscape card, a 4:3 one inside the border), and the card's
picture is generated at that aspect, so the worker never has to crop it."""

from __future__ import annotations

import unicodedata

from bot.services.errors import ServiceError
from intake.typefaces import CJK_PACKAGE, cjk_fonts_installed, needs_cjk, undrawable

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


def check_drawable(greeting: str) -> None:
    """Refuse, before anything is queued, a greeting with letters that no installed typeface draws (the card
    would show empty boxes). Reads font tables: run it in a thread."""
    missing = undrawable(greeting)
    if not missing:
        return
    shown = ", ".join(missing[:8]) + (", \u2026" if len(missing) > 8 else "")
    if needs_cjk(missing) and not cjk_fonts_installed():
        raise ServiceError(
            "greeting_font",
            f"The greeting has Japanese, Chinese or Korean letters ({shown}), but the font that draws them "
            f"(Noto Sans CJK, from the `{CJK_PACKAGE}` package) is not installed on this server, so the card would "
            "show empty boxes. Ask the bot's host to reinstall Likeness (`scripts/setup-env`), or write the "
            "greeting in Latin, Greek or Cyrillic letters.",
        )
    raise ServiceError(
        "greeting_font",
        f"Cards cannot draw these characters of the greeting: {shown} (no font here has them, so they would show "
        "as empty boxes); leave them out, or write them in another script.",
    )
