"""Re-roll, variation and upscale: a new generation built from a stored one (owner only), with consent checked
again, so a revoked grant or a forgotten subject also blocks these."""

from __future__ import annotations

import sqlite3
from typing import Any

from bot.services.context import ServiceContext
from bot.services.errors import ServiceError
from bot.services.generation_queue import GenerationDraft, check_record_id
from bot.services.params import random_seed
from bot.services.subject_access import newest_usable_adapter
from storage import adapters, consent, generations, subjects
from bot.services.types import Requester
from storage.generations import Generation

VARIATION_STRENGTH = 0.55  # img2img strength: keeps the composition, changes the details
UPSCALE_FACTOR = 2.0
UPSCALE_STRENGTH = 0.35  # hires fix: re-draws fine detail without changing the picture


def own_generation(conn: sqlite3.Connection, req: Requester, generation_id: object) -> Generation:
    generation_id = check_record_id(generation_id, "generation")
    generation = generations.get_generation(conn, generation_id)
    if generation is None or generation.user_id != req.user_id:
        raise ServiceError(
            "no_generation", f"You have no generation #{generation_id}; only the one who made it can change it."
        )
    return generation


def _check_consent(conn: sqlite3.Connection, req: Requester, generation: Generation) -> None:
    if not consent.may_use_all(conn, req.user_id, req.guild_id, generation.subject_ids):
        raise ServiceError(
            "not_allowed",
            "You can no longer use one of the people in this image (the owner stopped sharing, or it was deleted).",
        )


def _subject_entry(conn: sqlite3.Connection, entry: dict[str, Any], family: str) -> dict[str, Any]:
    adapter = adapters.get_adapter(conn, entry["adapter_id"])
    if adapter is not None and adapter.family == family:
        return entry
    subject = subjects.get_subject(conn, entry["subject_id"])
    if subject is None:
        raise ServiceError("not_allowed", "One of the people in this image was deleted, so it cannot be redone.")
    newest = newest_usable_adapter(conn, subject, family)
    return {**entry, "adapter_id": newest.id}


def _current_adapters(conn: sqlite3.Connection, generation: Generation, family: str) -> tuple[list, list[str]]:
    """The stored adapter list, with vanished adapters replaced by the subject's newest and removed styles dropped."""
    entries, warnings = [], []
    for entry in generation.adapters:
        if entry.get("kind") == "subject":
            entries.append(_subject_entry(conn, entry, family))
            continue
        style = generations.get_style(conn, entry.get("name", ""))
        if style is None or style.family != family:
            warnings.append(f"The style `{entry.get('name')}` is no longer installed, so this one is made without it.")
        else:
            entries.append({**entry, "style_id": style.id, "weight": style.weight})
    return entries, warnings


def _source_index(generation: Generation, index: object) -> int:
    if not generation.outputs:
        raise ServiceError("not_finished", f"Image #{generation.id} is not finished yet; try again when it is.")
    count = len(generation.outputs)
    if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= count:
        raise ServiceError("bad_index", f"Image #{generation.id} has pictures 1 to {count}; pick one of those.")
    return index - 1


def _draft(
    conn: sqlite3.Connection, ctx: ServiceContext, req: Requester, generation: Generation, kind: str,
    seed: int, **changes: Any,
) -> GenerationDraft:
    _check_consent(conn, req, generation)
    entries, warnings = _current_adapters(conn, generation, ctx.family)
    style = next((e["name"] for e in entries if e.get("kind") == "style"), None)
    prompt = changes.pop("prompt", None) or generation.prompt
    params = {**generation.params, "style": style, **changes}
    triggers = tuple(e["trigger"] for e in entries if e.get("kind") == "subject")
    return GenerationDraft(
        kind=kind, prompt=prompt, negative_prompt=generation.negative_prompt, seed=seed, params=params,
        adapters=entries, subject_ids=generation.subject_ids, triggers=triggers, parent_id=generation.id,
        warnings=tuple(warnings),
    )


def reroll_draft(conn: sqlite3.Connection, ctx: ServiceContext, req: Requester, generation_id: object) -> GenerationDraft:
    """Same prompt, parameters and adapters; a new random seed."""
    generation = own_generation(conn, req, generation_id)
    return _draft(conn, ctx, req, generation, "reroll", random_seed())


def _single_image_changes(generation: Generation, source: int) -> dict[str, Any]:
    """A variation or upscale works on one picture: a headshot keeps only its own prompt."""
    changes: dict[str, Any] = {"source_index": source}
    if generation.kind == "card":
        raise ServiceError("not_for_cards", "Cards can be re-rolled, but not varied or upscaled; try a re-roll.")
    prompts = generation.params.get("headshot_prompts")
    if prompts:
        changes.update(headshot_prompts=None, prompt=prompts[source] if source < len(prompts) else None)
    scale = generation.params.get("scale")
    if scale:  # the source picture is already bigger than the stored size
        changes.update(width=int(generation.params["width"] * scale), height=int(generation.params["height"] * scale))
    return changes


def variation_draft(
    conn: sqlite3.Connection, ctx: ServiceContext, req: Requester, generation_id: object, index: object
) -> GenerationDraft:
    """img2img from one picture of the parent with a new seed: the same picture, different details."""
    generation = own_generation(conn, req, generation_id)
    changes = _single_image_changes(generation, _source_index(generation, index))
    changes.update(strength=VARIATION_STRENGTH, scale=None)
    return _draft(conn, ctx, req, generation, "variation", random_seed(), **changes)


def upscale_draft(
    conn: sqlite3.Connection, ctx: ServiceContext, req: Requester, generation_id: object, index: object
) -> GenerationDraft:
    """Hires fix: one picture enlarged by UPSCALE_FACTOR, then re-drawn lightly with the same adapters."""
    generation = own_generation(conn, req, generation_id)
    if generation.kind == "upscale":
        raise ServiceError("already_upscaled", "This image is already upscaled; upscale the original instead.")
    changes = _single_image_changes(generation, _source_index(generation, index))
    changes.update(scale=UPSCALE_FACTOR, strength=UPSCALE_STRENGTH, count=1)
    return _draft(conn, ctx, req, generation, "upscale", generation.seed, **changes)
