"""Admin use cases: install and remove style LoRAs, and the limits in force (which anyone may read)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3

from bot.services.context import ServiceContext
from bot.services.errors import ServiceError
from bot.services.params import parse_float
from bot.services.prompts import MAX_PROMPT_CHARS
from bot.services.style_files import inspect_safetensors
from bot.services.subject_access import ensure_requester, shown
from bot.services.types import AdminLimits, Requester, StyleInfo, Upload
from storage import generations, jobs
from storage.cluster_nodes import ClusterNodes, read_cluster_nodes
from storage.db import transaction
from storage.files import style_key

_STYLE_NAME = re.compile(r"[a-z0-9-]{2,32}")
DEFAULT_STYLE_WEIGHT = 0.8
MAX_STYLE_WEIGHT = 2.0


def validate_style_name(raw: object) -> str:
    name = raw.strip().lower() if isinstance(raw, str) else ""
    if not _STYLE_NAME.fullmatch(name):
        raise ServiceError(
            "bad_style_name", "A style name is 2 to 32 lowercase letters, digits or '-', e.g. `pixel-art`."
        )
    return name


def validate_style_weight(raw: object) -> float:
    if raw is None:
        return DEFAULT_STYLE_WEIGHT
    weight = parse_float(raw, "The style weight")
    if not 0 < weight <= MAX_STYLE_WEIGHT:
        raise ServiceError("bad_style_weight", f"The style weight must be above 0 and at most {MAX_STYLE_WEIGHT:g}.")
    return round(weight, 3)


class AdminService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def _require_admin(self, req: Requester) -> None:
        if not self.ctx.is_admin(req.user_id):
            raise ServiceError(
                "admins_only", "Only the bot's admins (the host lists them in LIKENESS_ADMIN_USER_IDS) can do that."
            )

    async def add_style(self, req: Requester, name: str, upload: Upload, weight: float | None = None) -> StyleInfo:
        self._require_admin(req)
        style_name = validate_style_name(name)
        chosen_weight = validate_style_weight(weight)
        if not upload.filename.lower().endswith(".safetensors"):
            raise ServiceError("bad_style_file", "Attach the style LoRA as a .safetensors file.")
        data = bytes(upload.data)
        summary = await asyncio.to_thread(inspect_safetensors, data)
        digest = hashlib.sha256(data).hexdigest()
        key = style_key(digest)
        if not self.ctx.store.exists(key):
            await asyncio.to_thread(self.ctx.store.write_bytes, key, data)
        style = await self.ctx.db.run(self._record_style, req, style_name, key, digest, chosen_weight)
        return StyleInfo(style.name, style.family, style.weight, len(data), digest, summary.tensors)

    def _record_style(self, conn: sqlite3.Connection, req: Requester, name: str, key: str, digest: str,
                      weight: float) -> generations.Style:
        with transaction(conn):
            ensure_requester(conn, req)  # styles.added_by references the users table
            previous = generations.get_style(conn, name)
            style = generations.add_style(conn, name=name, family=self.ctx.family, path=key, sha256=digest,
                                          weight=weight, added_by=req.user_id)
        if previous is not None and previous.path != key:
            self._delete_unused_file(conn, previous.path)
        return style

    async def remove_style(self, req: Requester, name: str) -> StyleInfo:
        self._require_admin(req)
        style_name = name.strip().lower() if isinstance(name, str) else ""
        style = await self.ctx.db.run(self._remove_style, style_name)
        if style is None:
            raise ServiceError("unknown_style", f"There is no style called `{shown(name)}`.")
        return StyleInfo(style.name, style.family, style.weight, 0, style.sha256, 0)

    def _remove_style(self, conn: sqlite3.Connection, name: str) -> generations.Style | None:
        style = generations.delete_style(conn, name)
        if style is not None:
            self._delete_unused_file(conn, style.path)
        return style

    def _delete_unused_file(self, conn: sqlite3.Connection, key: str) -> None:
        if all(other.path != key for other in generations.list_styles(conn)):
            self.ctx.store.delete(key)

    async def cluster_nodes(self, req: Requester) -> ClusterNodes | None:
        """The Ray nodes the dispatcher last saw, with their recent joins and leaves; None in local mode."""
        self._require_admin(req)
        if not self.ctx.settings.cluster_address:
            return None
        return await asyncio.to_thread(read_cluster_nodes, self.ctx.settings.data_dir)

    async def limits(self, req: Requester) -> AdminLimits:
        settings = self.ctx.settings
        active, waiting = await self.ctx.db.run(_usage, req.user_id)
        return AdminLimits(
            is_admin=self.ctx.is_admin(req.user_id),
            min_photos_per_subject=settings.min_photos_per_subject,
            max_photos_per_subject=settings.max_photos_per_subject, max_upload_bytes=settings.max_upload_bytes,
            max_training_jobs_per_user=settings.max_training_jobs_per_user,
            max_queued_generations_per_user=settings.max_queued_generations_per_user,
            generation_cooldown_s=settings.generation_cooldown_s, prompt_max_chars=MAX_PROMPT_CHARS,
            blocklist_size=len(settings.prompt_blocklist), active_training_jobs=active, queued_generations=waiting,
            cooldown_left_s=round(self.ctx.limits.cooldown_left(req.user_id), 1),
        )


def _usage(conn: sqlite3.Connection, user_id: int) -> tuple[int, int]:
    return jobs.count_active(conn, user_id, "train"), jobs.count_active(conn, user_id, "generate")
