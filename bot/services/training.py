"""/train: create or extend a subject from photos, and queue its training job; /train-family for a group."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bot.services.context import ServiceContext
from bot.services.errors import ServiceError
from bot.services.photo_intake import (
    CheckedPhoto,
    check_batch_size,
    inspect_uploads,
    look_alike_notes,
    remove_files,
    store_checked_photos,
    stored_embeddings,
)
from bot.services.subject_access import ensure_requester, find_own_subject, own_subject_by_id, shown
from bot.services.training_outcome import SubjectPlan, family_outcome, train_outcome
from bot.services.types import Requester, TrainOutcome, Upload
from bot.services.verbs import slash
from storage import jobs, photos, subjects
from storage.db import transaction
from storage.subjects import Subject
from intake.triggers import (
    load_family_tokenizer_encode, normalise_trigger, suggest_trigger, trigger_skeleton, validate_class_noun,
    validate_trigger,
)

log = logging.getLogger(__name__)

_GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9 _-]{0,31}")
MAX_DISPLAY_NAME = 64


def clean_group_name(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    name = " ".join(raw.strip().lower().split())
    if not _GROUP_NAME.fullmatch(name):
        raise ServiceError(
            "bad_group", "A family group name is 1 to 32 letters, digits, spaces, '-' or '_', e.g. `smiths`."
        )
    return name


def _clean_display_name(raw: str | None, fallback: str) -> str:
    text = "".join(ch for ch in (raw or "") if ch.isprintable())
    text = " ".join(text.split())[:MAX_DISPLAY_NAME]
    return text or " ".join("".join(ch for ch in fallback if ch.isprintable()).split())[:MAX_DISPLAY_NAME]


def train_payload(ctx: ServiceContext, subject_ids: Sequence[int]) -> dict:
    overrides = {"steps": ctx.settings.train_steps} if ctx.settings.train_steps else {}
    return {"subject_ids": sorted(subject_ids), "family": ctx.family, "base_model": ctx.settings.base_model_id,
            "overrides": overrides}


def enqueue_training(conn: sqlite3.Connection, ctx: ServiceContext, req: Requester, subject_ids: Sequence[int]) -> int:
    return jobs.enqueue_job(
        conn, "train", train_payload(ctx, subject_ids), user_id=req.user_id, channel_id=req.channel_id,
        max_attempts=ctx.settings.job_max_attempts,
    )


@dataclass(frozen=True)
class TrainRequest:
    """What /train (or the console's `train`) asks for. `subject` retrains an existing subject of the requester
    from its stored photos; uploads are then optional (any given are added first)."""

    trigger: str | None = None
    class_noun: str = "person"
    display_name: str | None = None
    uploads: tuple[Upload, ...] = ()
    family_group: str | None = None
    subject: str | None = None


def look_alike_of_own(raw: str, own: Subject) -> ServiceError:
    """A new trigger that reads like one of the requester's own: refused rather than silently merged."""
    return ServiceError(
        "own_look_alike",
        f"`{shown(raw)}` is too close to your `{own.trigger}`; pick another trigger, or use "
        f"`{slash('retrain', subject=own.trigger)}` to add these photos to `{own.trigger}`.",
    )


def _retrained_subject(conn: sqlite3.Connection, req: Requester, name: str) -> Subject:
    subject = find_own_subject(conn, req.user_id, name)
    if subject is None:
        raise ServiceError(
            "no_subject",
            f"You have no subject `{shown(name)}` to retrain; {slash('subjects')} lists yours, and {slash('train')} "
            "with photos makes a new one.",
        )
    return subject


class TrainingService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._encode: Callable[[str], list[int]] | None = None
        self._encode_loaded = False

    async def start(self, req: Requester, request: TrainRequest) -> TrainOutcome:
        uploads = tuple(request.uploads)
        noun = validate_class_noun(request.class_noun or "")
        if not noun.ok:
            raise ServiceError("bad_class_noun", f"That class noun won't work: {noun.message}.")
        group = clean_group_name(request.family_group)
        trigger = request.trigger
        encode = await self._tokenizer_encode() if not (trigger or "").strip() and not request.subject else None
        plan = await self.ctx.db.run(self._plan, req, request, noun.token, group, encode)
        check_batch_size(self.ctx.settings, uploads, plan.photos_before, plan.trigger)
        if not uploads and plan.subject is None:
            raise ServiceError(
                "no_photos",
                f"Attach at least {self.ctx.settings.min_photos_per_subject} photos of {plan.display_name} "
                "(5 to 20 work best).",
            )
        faces = await self.ctx.db.run(stored_embeddings, plan.subject.id if plan.subject else None)
        checked = await inspect_uploads(self.ctx.settings, uploads, plan.trigger, plan.class_noun, plan.known_phashes,
                                        faces)
        return await self.ctx.db.run(self._commit, req, plan, checked)

    async def train_family(self, req: Requester, group: str) -> TrainOutcome:
        name = clean_group_name(group)
        if name is None:
            raise ServiceError("bad_group", "Say which family group to train, e.g. `smiths`.")
        return await self.ctx.db.run(self._queue_family, req, name)

    async def warm_up(self) -> None:
        await self._tokenizer_encode()

    # Tokenizer for trigger suggestions (optional: without it, suggestions skip the token-count ranking).
    def _tokenizer_folder(self) -> Path | None:
        settings = self.ctx.settings
        if settings.is_tiny_model:
            return settings.models_dir / settings.model_family
        path = Path(settings.model_path) if settings.model_path else None
        return path if path is not None and path.is_dir() else None

    async def _tokenizer_encode(self) -> Callable[[str], list[int]] | None:
        if not self._encode_loaded:
            folder = self._tokenizer_folder()
            if folder is not None and folder.is_dir():
                self._encode = await asyncio.to_thread(load_family_tokenizer_encode, folder)
            self._encode_loaded = True
        return self._encode

    # Database-thread steps.
    def _plan(
        self, conn: sqlite3.Connection, req: Requester, request: TrainRequest, class_noun: str, group: str | None,
        encode: Callable[[str], list[int]] | None,
    ) -> SubjectPlan:
        ensure_requester(conn, req)
        retrained = _retrained_subject(conn, req, request.subject) if request.subject is not None else None
        if group is None:
            self.ctx.limits.check_training_jobs(conn, req.user_id)
        if retrained is not None:
            return replace(_extend_plan(conn, retrained, group, class_noun), retrain=not request.uploads)
        raw_trigger, display_name = request.trigger, request.display_name
        taken = subjects.taken_trigger_keys(conn)
        if raw_trigger and raw_trigger.strip():
            own = find_own_subject(conn, req.user_id, raw_trigger)
            if own is not None and own.trigger != normalise_trigger(raw_trigger):
                raise look_alike_of_own(raw_trigger, own)
            if own is not None:
                return replace(_extend_plan(conn, own, group, class_noun), retrain=not request.uploads)
            verdict = validate_trigger(raw_trigger, taken)
            if not verdict.ok:
                raise ServiceError("bad_trigger", f"That trigger won't work: {verdict.message}.")
            token, suggested = verdict.token, False
        else:
            hint = display_name or req.display_name or "likeness"
            suggestions = suggest_trigger(hint, taken, encode)
            if not suggestions:
                raise ServiceError("bad_trigger", "I could not think of a free trigger; please choose one yourself.")
            token, suggested = suggestions[0], True
        return SubjectPlan(
            subject=None, trigger=token, class_noun=class_noun,
            display_name=_clean_display_name(display_name, req.display_name or token),
            group=group, suggested=suggested,
        )

    def _commit(
        self, conn: sqlite3.Connection, req: Requester, plan: SubjectPlan, checked: Sequence[CheckedPhoto]
    ) -> TrainOutcome:
        verdicts = tuple(item.verdict for item in checked)
        if plan.subject is None and not any(item.prepared for item in checked):
            return train_outcome(self.ctx.settings, plan, None, verdicts, 0, None)
        created: list[str] = []
        try:
            with transaction(conn):
                ensure_requester(conn, req)
                subject = self._subject_for(conn, req, plan)
                store_checked_photos(conn, self.ctx.store, subject, checked, created)
                total = photos.count_accepted(conn, subject.id)
                added = sum(1 for item in checked if item.prepared is not None)
                job_id = self._maybe_queue(conn, req, plan, subject, total, added)
                look_alikes = tuple(look_alike_notes(conn, subject))
        except BaseException:
            remove_files(self.ctx.store, created)
            raise
        outcome = train_outcome(self.ctx.settings, replace(plan, subject=subject, added=added), job_id, verdicts,
                                total, jobs.queue_position(conn, job_id) if job_id else None)
        return replace(outcome, notes=outcome.notes + look_alikes) if look_alikes else outcome

    def _subject_for(self, conn: sqlite3.Connection, req: Requester, plan: SubjectPlan) -> Subject:
        group_id = subjects.group_id_for(conn, req.user_id, plan.group) if plan.group else None
        if plan.subject is not None:
            current = own_subject_by_id(conn, req.user_id, plan.subject.id,
                                        f"`{plan.trigger}` was deleted meanwhile; start again with /train.")
            if group_id is not None and current.group_id != group_id:
                subjects.set_subject_group(conn, current.id, group_id)
            return current
        try:
            return subjects.create_subject(
                conn, owner_id=req.user_id, trigger=plan.trigger, trigger_key=trigger_skeleton(plan.trigger),
                class_noun=plan.class_noun, display_name=plan.display_name, family=self.ctx.family,
                guild_id=req.guild_id, group_id=group_id,
            )
        except subjects.TriggerTakenError:
            raise ServiceError(
                "bad_trigger", f"The trigger `{plan.trigger}` was taken a moment ago; please pick another."
            ) from None

    def _maybe_queue(
        self, conn: sqlite3.Connection, req: Requester, plan: SubjectPlan, subject: Subject, total: int,
        added: int,
    ) -> int | None:
        if plan.group is not None or total < self.ctx.settings.min_photos_per_subject:
            return None
        if added == 0 and not plan.retrain:
            return None  # nothing new to learn from, and no retraining was asked for
        if not self.ctx.limits.training_slot_free(conn, req.user_id):
            return None  # a job started meanwhile; the photos are kept and the outcome says to retrain later
        return enqueue_training(conn, self.ctx, req, [subject.id])

    def _queue_family(self, conn: sqlite3.Connection, req: Requester, name: str) -> TrainOutcome:
        with transaction(conn):
            ensure_requester(conn, req)
            group_id = subjects.group_id_named(conn, req.user_id, name)
            members = subjects.subjects_in_group(conn, group_id) if group_id is not None else []
            if not members:
                raise ServiceError(
                    "no_group",
                    f"You have no family group `{shown(name)}`; add people to it with /train and its family option.",
                )
            counts = {subject.id: photos.count_accepted(conn, subject.id) for subject in members}
            _require_photos(self.ctx.settings.min_photos_per_subject, members, counts)
            self.ctx.limits.check_training_jobs(conn, req.user_id)
            job_id = enqueue_training(conn, self.ctx, req, [subject.id for subject in members])
        return family_outcome(name, members, sum(counts.values()), job_id, jobs.queue_position(conn, job_id))


def _extend_plan(conn: sqlite3.Connection, subject: Subject, group: str | None, noun: str) -> SubjectPlan:
    return SubjectPlan(
        subject=subject, trigger=subject.trigger, class_noun=subject.class_noun, display_name=subject.display_name,
        group=group, suggested=False, photos_before=photos.count_accepted(conn, subject.id),
        known_phashes=tuple(photos.known_phashes(conn, subject.id)), noun_requested=noun, extending=True,
    )


def _require_photos(minimum: int, members: Sequence[Subject], counts: dict[int, int]) -> None:
    short = [f"`{s.trigger}` needs {minimum - counts[s.id]} more" for s in members if counts[s.id] < minimum]
    if short:
        raise ServiceError(
            "too_few_photos",
            f"Every member needs at least {minimum} accepted photos before the family trains: "
            f"{', '.join(short)} (add them with /photos add).",
        )
