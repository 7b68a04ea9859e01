"""Queueing a generation: the row with every parameter and its `generate` job, in one transaction.

Runs on the database thread. The counted limit and consent are checked inside the same transaction, so a grant
revoked a moment earlier or a burst of requests cannot slip through.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.services.errors import ServiceError
from bot.services.limits import UsageLimits
from bot.services.prompts import ResolvedSubject
from bot.services.subject_access import ensure_requester, shown
from bot.services.types import QueuedGeneration, Requester
from storage import consent, generations, jobs
from storage.db import transaction
from storage.generations import Style

DEFAULT_SUBJECT_WEIGHT = 1.0


@dataclass(frozen=True)
class GenerationDraft:
    kind: str  # imagine, reroll, variation, upscale, headshots, card
    prompt: str
    negative_prompt: str
    seed: int
    params: dict[str, Any]
    adapters: list[dict[str, Any]]
    subject_ids: tuple[int, ...]
    triggers: tuple[str, ...]
    parent_id: int | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def subject_entries(resolved: Sequence[ResolvedSubject]) -> list[dict[str, Any]]:
    return [
        {"kind": "subject", "subject_id": item.subject.id, "adapter_id": item.adapter.id,
         "trigger": item.subject.trigger, "weight": DEFAULT_SUBJECT_WEIGHT}
        for item in resolved
    ]


def style_entry(style: Style) -> dict[str, Any]:
    return {"kind": "style", "style_id": style.id, "name": style.name, "weight": style.weight}


def resolve_style(conn: sqlite3.Connection, raw_name: object, family: str) -> Style | None:
    if raw_name is None or (isinstance(raw_name, str) and not raw_name.strip()):
        return None
    name = str(raw_name).strip().lower()
    style = generations.get_style(conn, name) if len(name) <= 64 else None
    if style is None:
        raise ServiceError(
            "unknown_style", f"There is no style called `{shown(raw_name)}`; pick one from the style list."
        )
    if style.family != family:
        raise ServiceError(
            "style_family",
            f"The style `{style.name}` was made for {style.family}, but this bot runs {family}; pick another style.",
        )
    return style


def queue_generation(
    conn: sqlite3.Connection, limits: UsageLimits, req: Requester, draft: GenerationDraft, max_attempts: int
) -> QueuedGeneration:
    with transaction(conn):
        ensure_requester(conn, req)
        limits.check_queued_generations(conn, req.user_id)
        if not consent.may_use_all(conn, req.user_id, req.guild_id, draft.subject_ids):
            raise ServiceError(
                "not_allowed", "You can no longer use one of the people in this picture, so it was not queued."
            )
        generation_id = generations.create_generation(
            conn, user_id=req.user_id, kind=draft.kind, prompt=draft.prompt, negative_prompt=draft.negative_prompt,
            seed=draft.seed, params=draft.params, adapters=draft.adapters, subject_ids=draft.subject_ids,
            guild_id=req.guild_id, channel_id=req.channel_id, parent_id=draft.parent_id,
        )
        job_id = jobs.enqueue_job(
            conn, "generate", {"generation_id": generation_id}, user_id=req.user_id,
            channel_id=req.channel_id, max_attempts=max_attempts,
        )
        generations.attach_job(conn, generation_id, job_id)
    params = draft.params
    return QueuedGeneration(
        generation_id=generation_id, job_id=job_id, position=jobs.queue_position(conn, job_id), seed=draft.seed,
        subjects=draft.triggers, warnings=draft.warnings, kind=draft.kind,
        count=len(params.get("headshot_prompts") or ()) or params.get("count", 1),  # a headshot pack: one per prompt
        width=params.get("width", 0), height=params.get("height", 0), style=params.get("style"),
        prompt=draft.prompt,
    )


def generation_params(sampling_params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The full generations.params object: every key present, unused ones null."""
    params: dict[str, Any] = {
        "style": None, "strength": None, "source_index": None, "scale": None, "headshot_prompts": None,
        "greeting": None, "layout": None,
    }
    params.update(sampling_params)
    params.update(extra)
    return params


def check_record_id(value: object, what: str) -> int:
    """Ids typed or clicked by users: positive and within SQLite's integer range."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise ServiceError("bad_id", f"There is no {what} with that number.")
    return value
