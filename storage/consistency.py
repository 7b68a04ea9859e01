"""Does a database account for the stored files? Used to pick a backup that a restore can use without losing work.

Every file in the store belongs to a row: `users/<user>/subjects/<subject>/…` to a subject, `…/adapters/<job>/…` to
an adapter (or its job), `…/jobs/<job>/…` to a job, `…/generations/<generation>/…` to a generation,
`…/exports/<export>.zip` to an export, anything else under `users/<user>/` to the user, and
`styles/<sha256>.safetensors` to an installed style. A backup taken before some of those rows were written would
lose them (the files would stay as orphans that no command can reach); a backup with no rows at all is the empty
one taken at the very first start.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TEMP_MARK = ".tmp-"
# What each folder under users/<id>/ needs, as (table, query giving the ids that exist).
_NEEDS = {
    "subjects": ("subjects", "SELECT id FROM subjects"),
    "adapters": ("adapters", "SELECT job_id FROM adapters WHERE job_id IS NOT NULL UNION SELECT id FROM jobs"),
    "jobs": ("jobs", "SELECT id FROM jobs"),
    "generations": ("generations", "SELECT id FROM generations"),
    "exports": ("exports", "SELECT id FROM exports"),
}


@dataclass(frozen=True)
class StoreAccount:
    users: int  # users rows in the database
    stored: int  # files in the store
    missing: Counter  # files whose row the database lacks, by table

    @property
    def unaccounted(self) -> int:
        return sum(self.missing.values())

    @property
    def empty(self) -> bool:
        return self.users == 0

    def describe(self) -> str:
        """'it lacks the rows of 3 of the 28 stored files (2 generations, 1 subjects)'."""
        kinds = ", ".join(f"{n} {table}" for table, n in self.missing.most_common())
        return f"it lacks the rows of {self.unaccounted} of the {self.stored} stored files ({kinds})"


def _stored_files(store_dir: Path) -> list[tuple[str, ...]]:
    if not store_dir.exists():
        return []
    return [path.relative_to(store_dir).parts for path in store_dir.rglob("*")
            if path.is_file() and TEMP_MARK not in path.name]


def _id(part: str) -> int | None:
    stem = part.split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


def _ids(conn: sqlite3.Connection, query: str) -> set[int]:
    try:
        return {row[0] for row in conn.execute(query)}
    except sqlite3.OperationalError:  # no such table: a database from before it existed
        return set()


def _needed_row(parts: tuple[str, ...]) -> tuple[str, str, object] | None:
    """(table, id query, key) that a stored file needs; None for files no row owns (caches, stray files)."""
    if parts[0] == "styles" and len(parts) == 2:
        return "styles", "SELECT sha256 FROM styles", parts[1].split(".", 1)[0]
    if parts[0] != "users" or len(parts) < 3 or _id(parts[1]) is None:
        return None
    if len(parts) >= 4 and parts[2] in _NEEDS and _id(parts[3]) is not None:
        table, query = _NEEDS[parts[2]]
        return table, query, _id(parts[3])
    return "users", "SELECT id FROM users", _id(parts[1])


def account_for_store(db_path: Path, store_dir: Path) -> StoreAccount:
    """How far the database at db_path (opened read-only) accounts for the files under store_dir."""
    conn = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True)
    try:
        users = _ids(conn, "SELECT id FROM users")
        known: dict[str, set] = {}
        missing: Counter = Counter()
        files = _stored_files(Path(store_dir))
        for parts in files:
            need = _needed_row(parts)
            if need is None:
                continue
            table, query, key = need
            if query not in known:
                known[query] = {str(v) if table == "styles" else v for v in _ids(conn, query)}
            owner_known = table == "styles" or _id(parts[1]) in users
            if not owner_known or key not in known[query]:
                missing["users" if not owner_known else table] += 1
        return StoreAccount(users=len(users), stored=len(files), missing=missing)
    finally:
        conn.close()
