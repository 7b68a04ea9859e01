"""Finding subjects by the trigger a user typed, with the consent rules and the non-revealing messages.

All functions run on the database thread (they take a sqlite3.Connection).
"""

from __future__ import annotations

import sqlite3

from bot.services.errors import ServiceError
from bot.services.types import Requester
from storage import adapters, consent, jobs, subjects
from storage.adapters import Adapter
from storage.subjects import Subject
from intake.triggers import normalise_trigger, trigger_skeleton

MAX_SHOWN_CHARS = 32


def shown(raw: object) -> str:
    """User text made safe to quote inside backticks: printable, no backticks, short."""
    text = "".join(ch for ch in normalise_trigger(str(raw)) if ch.isprintable() and ch not in "`\\")
    text = " ".join(text.split())
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 1] + "\u2026"


def unknown_trigger_error(raw: object) -> ServiceError:
    """The same sentence whether the trigger does not exist or belongs to someone who has not shared it."""
    return ServiceError(
        "unknown_trigger",
        f"I don't know a trigger word `{shown(raw)}` that you can use. "
        "Check /subjects for yours and those shared with you.",
    )


def no_own_subject_error(raw: object) -> ServiceError:
    return ServiceError(
        "no_subject", f"You have no subject with the trigger `{shown(raw)}`. /subjects lists yours."
    )


def ensure_requester(conn: sqlite3.Connection, req: Requester) -> None:
    """Create the user row on first contact; refuse while the user's deletion is still running."""
    try:
        subjects.ensure_user(conn, req.user_id, req.display_name or "")
    except subjects.UserBeingForgottenError:
        raise being_forgotten_error() from None


def being_forgotten_error() -> ServiceError:
    return ServiceError(
        "being_forgotten",
        "Your data is still being deleted after /forget; try again in a minute, once that has finished.",
    )


def find_own_subject(conn: sqlite3.Connection, owner_id: int, raw_trigger: str) -> Subject | None:
    """The owner's subject with this trigger or a look-alike of it (trigger keys are unique), else None."""
    subject = subjects.subject_by_trigger_key(conn, trigger_skeleton(raw_trigger or ""))
    return subject if subject is not None and subject.owner_id == owner_id else None


def own_subject(conn: sqlite3.Connection, owner_id: int, raw_trigger: str) -> Subject:
    subject = find_own_subject(conn, owner_id, raw_trigger)
    if subject is None:
        raise no_own_subject_error(raw_trigger)
    return subject


def own_subject_by_id(conn: sqlite3.Connection, owner_id: int, subject_id: int,
                      gone: str = "That subject was deleted meanwhile.") -> Subject:
    """The owner's subject by id; `gone` is the message when it was deleted (or is not theirs)."""
    subject = subjects.get_subject(conn, subject_id)
    if subject is None or subject.owner_id != owner_id:
        raise ServiceError("no_subject", gone)
    return subject


def usable_subject(conn: sqlite3.Connection, req: Requester, raw_trigger: str) -> Subject:
    """A subject the requester owns or holds a grant for (user grant, or a grant to the guild asked from)."""
    subject = consent.resolve_trigger_key(conn, req.user_id, req.guild_id, trigger_skeleton(raw_trigger or ""))
    if subject is None:
        raise unknown_trigger_error(raw_trigger)
    return subject


def active_training_job(conn: sqlite3.Connection, subject: Subject) -> jobs.Job | None:
    for job in jobs.active_jobs(conn, subject.owner_id):
        if job.kind == "train" and subject.id in job.payload.get("subject_ids", ()):
            return job
    return None


def newest_usable_adapter(conn: sqlite3.Connection, subject: Subject, family: str) -> Adapter:
    """The subject's newest adapter for this family, or why there is none yet."""
    adapter = adapters.newest_adapter_for_subject(conn, subject.id, family)
    if adapter is not None:
        return adapter
    if active_training_job(conn, subject) is not None:
        raise ServiceError(
            "still_training",
            f"`{subject.trigger}` is still training; try again when its job finishes (/status shows progress).",
        )
    if adapters.newest_adapter_for_subject(conn, subject.id) is not None:
        raise ServiceError(
            "not_trained",
            f"`{subject.trigger}` was trained for another model, not {family}; its owner can retrain it with /train.",
        )
    raise ServiceError(
        "not_trained", f"`{subject.trigger}` is not trained yet; its owner can start that with /train."
    )
