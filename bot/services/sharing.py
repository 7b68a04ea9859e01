"""/share, /unshare and /subjects. Only the owner shares; a grant goes to one user or to a whole guild."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from bot.services.context import ServiceContext
from bot.services.errors import ServiceError
from bot.services.generation_queue import check_record_id
from bot.services.subject_access import active_training_job, being_forgotten_error, ensure_requester, own_subject
from bot.services.types import Requester, ShareOutcome, SubjectInfo, SubjectsView
from storage import adapters, consent, photos, subjects
from storage.db import transaction
from storage.subjects import Subject

LABEL_KEYS = ("label", "fallback")  # what the evaluation writes to explain a metric (e.g. "no face model")


def _target(req: Requester, user_id: int | None, guild_id: int | None) -> tuple[int | None, int | None]:
    if (user_id is None) == (guild_id is None):
        raise ServiceError("bad_target", "Share with one person or with this whole server, not both or neither.")
    if user_id is not None:
        user_id = check_record_id(user_id, "user")
        if user_id == req.user_id:
            raise ServiceError("bad_target", "You can always use your own subjects; pick someone else.")
    else:
        guild_id = check_record_id(guild_id, "server")
    return user_id, guild_id


def _state(conn: sqlite3.Connection, subject: Subject, adapter: adapters.Adapter | None) -> str:
    job = active_training_job(conn, subject)
    if job is not None:
        return "training" if job.state == "running" else "queued"
    return "ready" if adapter is not None else "not trained"


def _label(metrics: dict) -> str | None:
    for key in LABEL_KEYS:
        value = metrics.get(key)
        if value:
            return str(value)
    return None


def _subject_info(conn: sqlite3.Connection, subject: Subject, family: str, mine: bool) -> SubjectInfo:
    adapter = adapters.newest_adapter_for_subject(conn, subject.id, family)
    metrics = dict(adapter.metrics) if adapter else {}
    info = SubjectInfo(
        subject_id=subject.id, trigger=subject.trigger, class_noun=subject.class_noun,
        display_name=subject.display_name, family=subject.family, mine=mine, state=_state(conn, subject, adapter),
        adapter_id=adapter.id if adapter else None, adapter_version=adapter.version if adapter else None,
        metrics=metrics, label=_label(metrics),
    )
    if not mine:
        return info
    grants = consent.grants_for(conn, subject.id)
    return replace(
        info,
        photos=photos.count_accepted(conn, subject.id),
        group=subjects.group_name(conn, subject.group_id) if subject.group_id else None,
        shared_with_users=tuple(g.user_id for g in grants if g.user_id is not None),
        shared_with_guilds=tuple(g.guild_id for g in grants if g.guild_id is not None),
    )


class SharingService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def share(
        self, req: Requester, trigger: str, user_id: int | None = None, guild_id: int | None = None
    ) -> ShareOutcome:
        target_user, target_guild = _target(req, user_id, guild_id)
        return await self.ctx.db.run(self._share, req, trigger, target_user, target_guild)

    async def unshare(
        self, req: Requester, trigger: str, user_id: int | None = None, guild_id: int | None = None
    ) -> ShareOutcome:
        target_user, target_guild = _target(req, user_id, guild_id)
        return await self.ctx.db.run(self._unshare, req, trigger, target_user, target_guild)

    async def subjects(self, req: Requester) -> SubjectsView:
        return await self.ctx.db.run(self._subjects, req)

    def _share(self, conn: sqlite3.Connection, req: Requester, trigger: str, user_id: int | None,
               guild_id: int | None) -> ShareOutcome:
        with transaction(conn):
            ensure_requester(conn, req)
            subject = own_subject(conn, req.user_id, trigger)
            if user_id is not None:
                try:
                    subjects.ensure_user(conn, user_id)
                except subjects.UserBeingForgottenError:
                    raise ServiceError(
                        "grantee_forgotten", "That person is being removed from this bot; try again later."
                    ) from None
            created = consent.grant_access(conn, subject.id, user_id=user_id, guild_id=guild_id)
        return ShareOutcome(subject.trigger, user_id, guild_id, created)

    def _unshare(self, conn: sqlite3.Connection, req: Requester, trigger: str, user_id: int | None,
                 guild_id: int | None) -> ShareOutcome:
        with transaction(conn):
            subject = own_subject(conn, req.user_id, trigger)
            removed = consent.revoke_access(conn, subject.id, user_id=user_id, guild_id=guild_id)
        if not removed:
            whom = "that person" if user_id is not None else "that server"
            raise ServiceError("not_shared", f"`{subject.trigger}` was not shared with {whom}.")
        return ShareOutcome(subject.trigger, user_id, guild_id, True)

    def _subjects(self, conn: sqlite3.Connection, req: Requester) -> SubjectsView:
        if subjects.is_forgotten(conn, req.user_id):
            raise being_forgotten_error()
        family = self.ctx.family
        usable = consent.usable_subjects(conn, req.user_id, req.guild_id)
        mine = tuple(_subject_info(conn, s, family, True) for s in usable if s.owner_id == req.user_id)
        shared = tuple(_subject_info(conn, s, family, False) for s in usable if s.owner_id != req.user_id)
        return SubjectsView(mine=mine, shared=shared)
