"""Prompt text: cleaning, length, the blocklist, and finding the trigger tokens in it.

A word counts as a trigger mention when it is shaped like a trigger (rare, 3-20 letters or digits, look-alike
letters included) and either matches a trigger the requester may use or stands right before a class noun
("zqx person"). Each mention must resolve to a subject the requester may use; unknown and forbidden mentions get
the same sentence. Only the requester's usable triggers count as "known", so someone else's private trigger
behaves exactly like a word nobody uses: nothing reveals that it exists.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from bot.services.errors import ServiceError
from bot.services.subject_access import newest_usable_adapter, unknown_trigger_error
from bot.services.types import Requester
from storage import consent
from storage.adapters import Adapter
from storage.subjects import Subject
from intake.captions import blocked_word, clean_text
from intake.triggers import CLASS_NOUNS, normalise_trigger, trigger_skeleton, validate_trigger

MAX_PROMPT_CHARS = 1000
MAX_NEGATIVE_CHARS = 1000
_RAW_INPUT_LIMIT = 20_000  # refuse before cleaning anything absurdly long
_WORD = re.compile(r"[^\W_]+")
_TRIGGER_SHAPED_CODES = ("ok", "lookalike_chars", "invalid_chars")
PROMPT_EXAMPLE = "`a photo of rraj person as an astronaut`"


def clean_prompt(raw: object, *, what: str = "prompt", max_chars: int = MAX_PROMPT_CHARS, required: bool = True) -> str:
    """NFKC text without control or invisible characters, whitespace collapsed, within the length limit."""
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise ServiceError("bad_prompt", f"The {what} must be text.")
    if len(raw) > _RAW_INPUT_LIMIT:
        raise ServiceError(
            "prompt_too_long", f"The {what} is {len(raw)} characters long; keep it under {max_chars}."
        )
    text = clean_text(raw)
    if required and not text:
        if raw.strip():
            raise ServiceError(
                "empty_prompt",
                f"The {what} has only invisible or control characters; type the words you want, e.g. {PROMPT_EXAMPLE}.",
            )
        raise ServiceError("empty_prompt", f"The {what} is empty; describe the picture, e.g. {PROMPT_EXAMPLE}.")
    if len(text) > max_chars:
        raise ServiceError(
            "prompt_too_long", f"The {what} is {len(text)} characters long; keep it under {max_chars}."
        )
    return text


def check_blocklist(text: str, blocklist: Sequence[str]) -> None:
    word = blocked_word([text], blocklist)
    if word is not None:
        raise ServiceError(
            "blocked_prompt", f"This server does not allow `{word}` in prompts; please rephrase."
        )


@dataclass(frozen=True)
class TriggerMention:
    word: str  # as typed
    start: int
    end: int
    key: str  # trigger_skeleton(word)


def _trigger_shaped(word: str) -> bool:
    return validate_trigger(word).code in _TRIGGER_SHAPED_CODES


def find_trigger_mentions(prompt: str, known_keys: Collection[str]) -> list[TriggerMention]:
    """Trigger-shaped words that match one of `known_keys` or precede a class noun, left to right."""
    words = list(_WORD.finditer(prompt))
    mentions = []
    for position, match in enumerate(words):
        word = match.group(0)
        if len(word) > 40:
            continue
        key = trigger_skeleton(word)
        before_noun = position + 1 < len(words) and normalise_trigger(words[position + 1].group(0)) in CLASS_NOUNS
        if (key in known_keys or before_noun) and _trigger_shaped(word):
            mentions.append(TriggerMention(word, match.start(), match.end(), key))
    return mentions


@dataclass(frozen=True)
class ResolvedSubject:
    subject: Subject
    adapter: Adapter


@dataclass(frozen=True)
class ResolvedPrompt:
    prompt: str  # with each mention written as its subject's canonical trigger
    subjects: tuple[ResolvedSubject, ...]  # distinct, in prompt order


def resolve_mentions(
    conn: sqlite3.Connection, req: Requester, mentions: Sequence[TriggerMention], family: str
) -> list[ResolvedSubject]:
    resolved: dict[int, ResolvedSubject] = {}
    for mention in mentions:
        subject = consent.resolve_trigger_key(conn, req.user_id, req.guild_id, mention.key)
        if subject is None:
            raise unknown_trigger_error(mention.word)
        if subject.id not in resolved:
            resolved[subject.id] = ResolvedSubject(subject, newest_usable_adapter(conn, subject, family))
    return list(resolved.values())


def canonical_prompt(prompt: str, mentions: Sequence[TriggerMention], resolved: Sequence[ResolvedSubject]) -> str:
    """Rewrite 'RRAJ' or a look-alike spelling as the trigger the adapter learned."""
    by_key = {item.subject.trigger_key: item.subject.trigger for item in resolved}
    for mention in sorted(mentions, key=lambda m: m.start, reverse=True):
        prompt = prompt[: mention.start] + by_key[mention.key] + prompt[mention.end :]
    return prompt


def resolve_prompt(conn: sqlite3.Connection, req: Requester, prompt: str, family: str) -> ResolvedPrompt:
    usable = consent.usable_subjects(conn, req.user_id, req.guild_id)
    mentions = find_trigger_mentions(prompt, {subject.trigger_key for subject in usable})
    resolved = resolve_mentions(conn, req, mentions, family)
    return ResolvedPrompt(canonical_prompt(prompt, mentions, resolved), tuple(resolved))
