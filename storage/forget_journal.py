"""The forget journal: a small file beside the database that outlives it (a restore replaces the database, not this).

- `pending`: users whose erasure has started and not finished, by id. A forget writes its user here (fsynced)
  before it touches anything, and removes them only once rows, files, backups and `damaged-*` copies are clean,
  so a process killed half-way leaves work the next start finishes.
- `forgotten`: every finished forget, as a salted hash of the user id (HMAC-SHA256 with this journal's random
  salt) and the time of the forget. A user row that a restore from an older backup brought back matches one of
  these (the same id, created before that forget) and is erased again; someone who comes back later and starts
  over is a new row, created after the forget, and is left alone. The journal holds no name and no plain id of a
  forgotten person.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from storage.files import atomic_path

log = logging.getLogger(__name__)

JOURNAL_NAME = "forget-journal.json"
VERSION = 1


@dataclass
class ForgetJournal:
    path: Path
    salt: str
    pending: dict[int, float] = field(default_factory=dict)  # user id -> when the forget started
    forgotten: list[tuple[str, float]] = field(default_factory=list)  # (salted hash, when) per finished forget
    _latest: dict[str, float] | None = field(default=None, repr=False)  # hash -> its latest forget, built on use

    def user_hash(self, user_id: int) -> str:
        return hmac.new(bytes.fromhex(self.salt), str(int(user_id)).encode(), hashlib.sha256).hexdigest()

    def forgotten_at(self, user_id: int, created_at: float) -> float | None:
        """When this user was forgotten, for a user row that existed then (a restore brought it back); else None."""
        if self._latest is None:
            self._latest = {}
            for known, at in self.forgotten:
                self._latest[known] = max(at, self._latest.get(known, at))
        at = self._latest.get(self.user_hash(user_id))
        return at if at is not None and created_at <= at else None

    def save(self) -> None:
        data = {"version": VERSION, "salt": self.salt,
                "pending": {str(user_id): at for user_id, at in sorted(self.pending.items())},
                "forgotten": [{"hash": digest, "at": at} for digest, at in self.forgotten]}
        with atomic_path(self.path) as temp:
            temp.write_text(json.dumps(data, indent=1))


def journal_path(data_dir: Path) -> Path:
    return Path(data_dir) / JOURNAL_NAME


def load(data_dir: Path) -> ForgetJournal:
    """The journal of a data directory; a new one (with a fresh salt, not yet written) when there is none."""
    path = journal_path(data_dir)
    try:
        data = json.loads(path.read_text())
        return ForgetJournal(path, str(data["salt"]),
                             {int(k): float(v) for k, v in data.get("pending", {}).items()},
                             [(str(e["hash"]), float(e["at"])) for e in data.get("forgotten", [])])
    except FileNotFoundError:
        return ForgetJournal(path, secrets.token_hex(16))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Written atomically, so this means outside damage. Keep the file for the host; never drop its entries
        # silently by writing over it.
        aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        os.replace(path, aside)
        log.error("the forget journal %s could not be read (%s); it was moved to %s and a new one started. "
                  "Forgets recorded there are no longer re-applied after a restore.", path, exc, aside.name)
        return ForgetJournal(path, secrets.token_hex(16))


def add_pending(data_dir: Path, user_ids: list[int], stamp: float | None = None) -> None:
    """Record erasures about to start (durably, before anything is deleted)."""
    journal = load(data_dir)
    new = [user_id for user_id in user_ids if user_id not in journal.pending]
    if not new:
        return
    for user_id in new:
        journal.pending[user_id] = stamp or time.time()
    journal.save()


def pending_users(data_dir: Path) -> dict[int, float]:
    path = journal_path(data_dir)
    return load(data_dir).pending if path.exists() else {}


def finish(data_dir: Path, user_ids: list[int]) -> None:
    """These erasures are complete: keep only their salted hashes."""
    journal = load(data_dir)
    done = [user_id for user_id in user_ids if user_id in journal.pending]
    if not done:
        return
    for user_id in done:
        entry = (journal.user_hash(user_id), journal.pending.pop(user_id))
        if entry not in journal.forgotten:  # an erasure applied again after a restore keeps its first record
            journal.forgotten.append(entry)
    journal._latest = None
    journal.save()
