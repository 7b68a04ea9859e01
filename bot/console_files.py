"""The console's copies in its output folder (storage/console_files.py): recorded as they are written, removed with
the generation, export or person they copy, and the folder a job asked for (`imagine ... --out DIR`).

A copy is removed only while it still holds what the console wrote (same SHA-256): a file the user has since
replaced or edited is theirs, and is listed instead. So is a file that cannot be removed (permissions, a busy disk).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from storage import console_files
from storage.console_files import ConsoleFile
from storage.db import AsyncDatabase, checkpoint_truncate, transaction

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Removal:
    """What removing some copies did."""

    removed: list[str] = field(default_factory=list)  # paths removed now (or already gone)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (path, why it stays)

    def __add__(self, other: Removal) -> Removal:
        return Removal(self.removed + other.removed, self.kept + other.kept)

    def summary(self, folder_hint: str = "out/") -> str:
        """One or two sentences for the user; "" when there were no copies."""
        parts = []
        if self.removed:
            parts.append(f"Removed {_count(len(self.removed), 'copy', 'copies')} the console wrote to {folder_hint}.")
        if self.kept:
            listed = "; ".join(f"{path} ({why})" for path, why in self.kept)
            parts.append(f"Could not remove {_count(len(self.kept), 'file', 'files')}: {listed}.")
        return " ".join(parts)


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _remove_copy(record: ConsoleFile) -> str | None:
    """Remove one copy; None when it is gone, else why it stays."""
    path = Path(record.path)
    try:
        if not path.is_file():
            return None if not path.exists() else "not a plain file any more, so it was left alone"
        if file_sha256(path) != record.sha256:
            return "changed since the console wrote it, so it was left alone"
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as error:
        return error.strerror or str(error)
    return None


def remove_copies(records: Sequence[ConsoleFile]) -> Removal:
    result = Removal()
    for record in records:
        why = _remove_copy(record)
        if why is None:
            result.removed.append(record.path)
        else:
            result.kept.append((record.path, why))
    return result


class ConsoleFiles:
    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db

    async def record(self, user_id: int, paths: Iterable[Path], *, generation_id: int | None = None,
                     subject_id: int | None = None) -> None:
        """Remember files the console has just written (their content, so later edits are respected)."""
        entries = []
        for path in paths:
            resolved = Path(path).resolve()
            entries.append((str(resolved), await asyncio.to_thread(file_sha256, resolved)))
        await self.db.run(self._record, user_id, entries, generation_id, subject_id)

    @staticmethod
    def _record(conn, user_id: int, entries, generation_id: int | None, subject_id: int | None) -> None:
        with transaction(conn):
            for path, sha256 in entries:
                console_files.record_file(conn, user_id=user_id, path=path, sha256=sha256,
                                          generation_id=generation_id, subject_id=subject_id)

    async def remove_orphans(self) -> Removal:
        """Remove the copies of generations, exports and people that are gone; forget their records."""
        return await self._remove(await self.db.run(console_files.orphaned_files))

    async def remove_for_user(self, user_id: int) -> Removal:
        """Remove every copy made for this user (before a forget, so the forget's fresh backup and WAL truncation
        keep no record naming their files)."""
        return await self._remove(await self.db.run(console_files.files_of_user, user_id))

    async def _remove(self, records: list[ConsoleFile]) -> Removal:
        if not records:
            return Removal()
        result = await asyncio.to_thread(remove_copies, records)
        await self.db.run(self._drop, [record.id for record in records])
        return result

    @staticmethod
    def _drop(conn, ids: list[int]) -> None:
        with transaction(conn):
            console_files.drop_records(conn, ids)
        checkpoint_truncate(conn)  # the removed rows named the files (and perhaps a trigger word): no old copy stays

    # Where a job's pictures go.
    async def set_folder(self, job_id: int, folder: Path) -> None:
        await self.db.run(self._set_folder, job_id, str(Path(folder).resolve()))

    @staticmethod
    def _set_folder(conn, job_id: int, folder: str) -> None:
        with transaction(conn):
            console_files.set_destination(conn, job_id, folder)

    async def folder_for(self, job_id: int, default: Path) -> Path:
        chosen = await self.db.run(console_files.destination, job_id)
        return Path(chosen) if chosen else default
