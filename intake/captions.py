"""Caption text rules: the template caption, sanitising what users type, and the prompt blocklist (torch-free)."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

# CLIP reads 77 tokens; English averages about 4 characters per token, so 200 characters fit with room to spare.
MAX_CAPTION_CHARS = 200
# BLIP is prompted with this prefix, so generated captions start with it.
BLIP_PROMPT = "a photo of"
# Words BLIP uses for the photographed subject; the first one becomes "<trigger> <class>".
SUBJECT_WORDS = (
    "man", "woman", "person", "boy", "girl", "guy", "lady", "child", "kid", "baby", "dog", "puppy", "cat", "kitten",
)
# BLIP-large sometimes starts with a made-up word ("arafed", "araffe"); it carries nothing.
_BLIP_ARTEFACT = re.compile(r"\bara+f+\w*\s*", re.IGNORECASE)


@dataclass(frozen=True)
class CaptionVerdict:
    ok: bool
    caption: str  # the cleaned caption (the template when none was given)
    code: str  # "ok", "template", "missing_trigger", "too_long"
    message: str


def template_caption(trigger: str, class_noun: str) -> str:
    return f"a photo of {trigger} {class_noun}"


def clean_text(raw: str) -> str:
    """NFKC, control and invisible characters removed (line breaks become spaces), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", raw)
    text = "".join(" " if ch in "\t\n\r\v\f\x85\u2028\u2029" else ch for ch in text)
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("C"))
    return " ".join(text.split())


def blocked_word(texts: Iterable[str], blocklist: Sequence[str]) -> str | None:
    """The first blocklist entry found as a whole word or phrase in any of the texts, ignoring case, width
    variants and invisible characters (the bot checks before queueing, the worker again before rendering)."""
    folded = [clean_text(text).casefold() for text in texts if text]
    for entry in blocklist:
        entry = clean_text(entry).casefold()
        if not entry:
            continue
        pattern = re.compile(rf"(?<![^\W_]){re.escape(entry)}(?![^\W_])")
        if any(pattern.search(text) for text in folded):
            return entry
    return None


def _trigger_pattern(trigger: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![a-z0-9]){re.escape(trigger)}(?![a-z0-9])", re.IGNORECASE)


def sanitise_caption(raw: str | None, trigger: str, class_noun: str) -> CaptionVerdict:
    """Clean a user's caption. Blank gives the template; the trigger must appear as a whole word."""
    text = clean_text(raw or "")
    if not text:
        return CaptionVerdict(True, template_caption(trigger, class_noun), "template", "using the standard caption")
    if len(text) > MAX_CAPTION_CHARS:
        return CaptionVerdict(
            False, text, "too_long",
            f"the caption has {len(text)} characters; keep it under {MAX_CAPTION_CHARS} so the model reads all of it",
        )
    pattern = _trigger_pattern(trigger)
    if not pattern.search(text):
        return CaptionVerdict(
            False, text, "missing_trigger",
            f"the caption must mention your trigger '{trigger}', e.g. '{template_caption(trigger, class_noun)} "
            "smiling on a beach'",
        )
    return CaptionVerdict(True, pattern.sub(trigger, text), "ok", "caption accepted")


def _article_for(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def personalise_caption(generated: str, trigger: str, class_noun: str) -> str:
    """Turn a generic caption ('a man in a suit') into a training caption ('a photo of a rraj person in a suit')."""
    text = clean_text(_BLIP_ARTEFACT.sub("", generated or "")).lower()
    text = text.removeprefix(BLIP_PROMPT).strip(" ,")
    subject = f"{trigger} {class_noun}"
    match = re.search(rf"\b(?:(a|an|the)\s+)?({'|'.join(SUBJECT_WORDS)})\b", text)
    if match:
        article = _article_for(trigger) if match.group(1) else ""
        text = f"{BLIP_PROMPT} {text[: match.start()]}{article} {subject}{text[match.end() :]}"
        text = " ".join(text.split())
    else:
        text = f"{template_caption(trigger, class_noun)}, {text}" if text else template_caption(trigger, class_noun)
    while len(text) > MAX_CAPTION_CHARS and " " in text:
        text = text.rsplit(" ", 1)[0]
    verdict = sanitise_caption(text, trigger, class_noun)
    return verdict.caption if verdict.ok else template_caption(trigger, class_noun)
