"""/export (a zip of the newest adapter's files with a README) and /forget (tombstone, then sweep)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import zipfile
from dataclasses import dataclass

from bot.services.context import ServiceContext
from bot.services.errors import ServiceError
from bot.services.subject_access import ensure_requester, own_subject
from bot.services.types import ExportBundle, ForgetOutcome, Requester
from storage import adapters, forget
from storage.exports import delete_export, record_export
from storage.lora_hash import NotSafetensorsError, a1111_lora_file, lora_hash, short_lora_hash
from storage.adapters import Adapter
from storage.db import transaction
from storage.subjects import Subject

README_NAME = "README.txt"
KEEP_OLD_EXPORTS_S = 3600  # an older zip may still be uploading; drop it on the next export after an hour


@dataclass(frozen=True)
class ExportPlan:
    subject: Subject
    adapter: Adapter
    files: tuple[str, ...]  # store keys in the adapter's folder
    export_id: int
    key: str
    stale_keys: tuple[str, ...]  # earlier exports of this user to remove


def weights_hash_lines(path) -> list[str]:
    """The LoRA hash of the file A1111 and Civitai load (the kohya copy when there is one; storage.lora_hash),
    for the README."""
    loaded = a1111_lora_file(path)
    try:
        full = lora_hash(loaded)
    except (OSError, NotSafetensorsError):
        return ["LoRA hash: unavailable (the adapter file is not a readable safetensors file)"]
    return [f"LoRA hash of {loaded.name}, the file A1111 and ComfyUI load (Civitai AutoV3: SHA-256 of the tensor "
            f"data): {full}",
            f"Short hash, as in the `Lora hashes` of our PNGs: {short_lora_hash(full)}"]


def readme_text(subject: Subject, adapter: Adapter, names: list[str], hash_lines: list[str]) -> str:
    created = dt.datetime.fromtimestamp(adapter.created_at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "Likeness adapter export",
        "",
        f"Subject: {subject.display_name}",
        f"Trigger: {subject.trigger}    Class noun: {subject.class_noun}",
        f'Write it in prompts as: "a photo of {subject.trigger} {subject.class_noun}"',
        f"Model family: {adapter.family}    Base model: {adapter.base_model}",
        f"Adapter version: {adapter.version}    Trained: {created}",
        *hash_lines,
        "",
        "Files: " + ", ".join(names),
        "",
        "Load it with diffusers:",
        "    pipe.load_lora_weights(folder, weight_name='pytorch_lora_weights.safetensors')",
        "",
        "Training parameters:",
        json.dumps(adapter.params, indent=2, sort_keys=True, default=str),
        "",
        "Metrics:",
        json.dumps(adapter.metrics, indent=2, sort_keys=True, default=str),
        "",
    ]
    return "\n".join(lines)


class AccountService:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def export(self, req: Requester, trigger: str) -> ExportBundle:
        plan = await self.ctx.db.run(self._plan_export, req, trigger)
        try:
            names = await asyncio.to_thread(self._write_zip, plan)
        except BaseException:
            await self.ctx.db.run(delete_export, plan.export_id)
            raise
        path = self.ctx.store.resolve(plan.key)
        size = path.stat().st_size
        return ExportBundle(
            path=path, size=size, fits_upload=size <= self.ctx.settings.max_upload_bytes,
            filename=f"likeness-{plan.subject.trigger}-v{plan.adapter.version}.zip", trigger=plan.subject.trigger,
            version=plan.adapter.version, files=tuple(names), subject_id=plan.subject.id,
        )

    def _plan_export(self, conn: sqlite3.Connection, req: Requester, trigger: str) -> ExportPlan:
        with transaction(conn):
            ensure_requester(conn, req)
            subject = own_subject(conn, req.user_id, trigger)
            adapter = adapters.newest_adapter_for_subject(conn, subject.id, self.ctx.family)
            adapter = adapter or adapters.newest_adapter_for_subject(conn, subject.id)
            if adapter is None:
                raise ServiceError("not_trained", f"`{subject.trigger}` has no trained adapter yet; train it with /train.")
            folder = adapter.path.rsplit("/", 1)[0]
            files = tuple(self.ctx.store.list_files(folder))
            if adapter.path not in files:
                raise ServiceError(
                    "export_missing",
                    f"The adapter file of `{subject.trigger}` is missing on the server; ask the bot's host to check.",
                )
            export_id, key, stale = record_export(conn, req.user_id, KEEP_OLD_EXPORTS_S)
        return ExportPlan(subject, adapter, files, export_id, key, tuple(stale))

    def _write_zip(self, plan: ExportPlan) -> list[str]:
        store = self.ctx.store
        folder = plan.adapter.path.rsplit("/", 1)[0]
        names = [key[len(folder) + 1:] for key in plan.files]
        with store.writing(plan.key) as temp, zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED) as archive:
            for key, name in zip(plan.files, names, strict=True):
                archive.write(store.resolve(key), arcname=name)
            hash_lines = weights_hash_lines(store.resolve(plan.adapter.path))
            archive.writestr(README_NAME, readme_text(plan.subject, plan.adapter, names, hash_lines))
        for key in plan.stale_keys:
            if key:
                store.delete(key)
        return [*names, README_NAME]

    async def forget(self, req: Requester) -> ForgetOutcome:
        """Cut off every use of the user's likeness at once, then delete rows and files. A running job must stop
        first; the bot's maintenance sweep (sweep_forgotten) finishes the deletion after it does."""
        report = await self.ctx.db.run(forget.tombstone_user, req.user_id)
        self.ctx.limits.forget_user(req.user_id)
        if report is None:
            return ForgetOutcome(nothing_stored=True)
        swept = await self.ctx.db.run(forget.sweep_forgotten, self.ctx.store)
        return ForgetOutcome(
            nothing_stored=False, subjects=report.subjects, photos=report.photos, adapters=report.adapters,
            generations=report.generations, grants=report.grants, jobs_stopped=report.jobs_stopped,
            finishing=req.user_id not in swept,
        )
