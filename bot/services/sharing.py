"""/share, /unshare and /subjects. Only the owner shares; a grant goes to one user or to a whole guild."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from bot.services.context import ServiceContext
from bot.services.errors import ServiceError
from bot.services.generation_queue import check_record_id
from bot.services.subject_access import (
    active_training_job, being_forgotten_error, ensure_requester, find_own_subject, no_own_subject_error,
)
from bot.services.types import Requester, ShareOutcome, SubjectInfo, SubjectsView
from bot.services.verbs import slash
from storage import adapters, consent, photos, subjects
from storage.db import transaction
from storage.subjects import Subject
from intake.triggers import trigger_skeleton

LABEL_KEYS = ("label", "fallback")  # what the evaluation writes to explain a metric (e.g. "no face model")


def _target(req: Requester, user_id: int | None, guild_id: int | None) -> tuple[int | None, int | None]:
    if (user_id is None) == (guild_id is None):
        raise ServiceError("bad_target", "Share with one person or with this whole server, not both or neither.")
    if user_id is not None:
        user_id = check_record_id(user_id, "user")
    else:
        guild_id = check_record_id(guild_id, "server")
    return user_id, guild_id


def _why_usable(conn: sqlite3.Connection, req: Requester, subject: Subject) -> str:
    """Why the requester may use someone else's subject: their own grant, this server's, or both."""
    grants = consent.grants_for(conn, subject.id)
    own = any(g.user_id == req.user_id for g in grants)
    here = req.guild_id is not None and any(g.guild_id == req.guild_id for g in grants)
    if own and here:
        return "its owner shared it with you, and with everyone in this server"
    return "its owner shared it with you" if own else "its owner shared it with everyone in this server"


def owned_for_change(conn: sqlite3.Connection, req: Requester, trigger: str, target_user: int | None) -> Subject:
    """The requester's subject to share or unshare. Someone else's subject that they may use gets the truth (only
    its owner decides, and why they can use it); an unknown or private one gets the usual non-revealing answer."""
    subject = find_own_subject(conn, req.user_id, trigger)
    if subject is None:
        theirs = consent.resolve_trigger_key(conn, req.user_id, req.guild_id, trigger_skeleton(trigger or ""))
        if theirs is None:
            raise no_own_subject_error(trigger)
        raise ServiceError(
            "not_owner",
            f"`{theirs.trigger}` is not your subject, so only its owner can change who may use it. You can use it "
            f"because {_why_usable(conn, req, theirs)}.",
        )
    if target_user == req.user_id:
        raise ServiceError(
            "bad_target", f"`{subject.trigger}` is yours, so you can always use it; pick someone else."
        )
    return subject


def _remaining(conn: sqlite3.Connection, subject: Subject) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(servers, users) the subject is still shared with."""
    grants = consent.grants_for(conn, subject.id)
    return (tuple(g.guild_id for g in grants if g.guild_id is not None),
            tuple(g.user_id for g in grants if g.user_id is not None))


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
            subject = owned_for_change(conn, req, trigger, user_id)
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
            subject = owned_for_change(conn, req, trigger, user_id)
            removed = consent.revoke_access(conn, subject.id, user_id=user_id, guild_id=guild_id)
            still_guilds, still_users = _remaining(conn, subject)
        if not removed:
            whom = "that person" if user_id is not None else "that server"
            text = f"`{subject.trigger}` was not shared with {whom}"
            if user_id is not None and req.guild_id in still_guilds:
                text += (f" directly; they can use it through your share with everyone in this server "
                         f"(`{slash('unshare-server', subject=subject.trigger)}` takes that back)")
            raise ServiceError("not_shared", text + ".")
        return ShareOutcome(subject.trigger, user_id, guild_id, True, still_guilds=still_guilds,
                            still_users=still_users if guild_id is not None else (), here_guild=req.guild_id)

    def _subjects(self, conn: sqlite3.Connection, req: Requester) -> SubjectsView:
        if subjects.is_forgotten(conn, req.user_id):
            raise being_forgotten_error()
        family = self.ctx.family
        usable = consent.usable_subjects(conn, req.user_id, req.guild_id)
        mine = tuple(_subject_info(conn, s, family, True) for s in usable if s.owner_id == req.user_id)
        shared = tuple(_subject_info(conn, s, family, False) for s in usable if s.owner_id != req.user_id)
        return SubjectsView(mine=mine, shared=shared)
