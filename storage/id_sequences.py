"""Ids that are never reused: rebuilding tables with `INTEGER PRIMARY KEY AUTOINCREMENT`.

Without AUTOINCREMENT SQLite hands out max(id) + 1, so deleting the newest rows (e.g. `forget`) frees their ids
for the next insert, and a persistent button or an output file name that carried the old id would point at a
new record. A table cannot be altered to AUTOINCREMENT; it is rebuilt. This runs inside the migration's
transaction with foreign keys on (the pragma cannot change inside a transaction), so the rows of every table
that refers to a rebuilt one are set aside too, the old tables are dropped children first (no cascade finds
anything to act on), and the new ones are created and refilled parents first.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable

_ROWID_COLUMN = re.compile(r"\bid\s+INTEGER\s+PRIMARY\s+KEY\b(?!\s+AUTOINCREMENT)", re.IGNORECASE)


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    return [row[0] for row in rows]


def _parents(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[2] for row in conn.execute(f'PRAGMA foreign_key_list("{table}")')} - {table}


def _closure(conn: sqlite3.Connection, targets: Iterable[str]) -> dict[str, set[str]]:
    """Every table to rebuild (the targets and whatever refers to them), with its parents among them."""
    parents = {table: _parents(conn, table) for table in _tables(conn)}
    chosen = set(targets)
    grew = True
    while grew:
        extra = {table for table, refs in parents.items() if table not in chosen and refs & chosen}
        chosen |= extra
        grew = bool(extra)
    return {table: parents[table] & chosen for table in chosen}


def _parents_first(graph: dict[str, set[str]]) -> list[str]:
    order: list[str] = []
    pending = dict(graph)
    while pending:
        ready = sorted(t for t, refs in pending.items() if not refs - set(order))
        if not ready:
            raise ValueError(f"foreign keys form a cycle among {sorted(pending)}")
        order += ready
        for table in ready:
            del pending[table]
    return order


def _definition(conn: sqlite3.Connection, table: str) -> tuple[str, list[str], list[str]]:
    """(CREATE TABLE sql, CREATE INDEX/TRIGGER sql, column names)."""
    create = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
    extras = [row[0] for row in conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') AND sql IS NOT NULL"
        " ORDER BY type, name", (table,))]
    columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
    return create, extras, columns


def with_autoincrement(create_sql: str) -> str:
    changed, count = _ROWID_COLUMN.subn("id INTEGER PRIMARY KEY AUTOINCREMENT", create_sql, count=1)
    if count != 1 and "AUTOINCREMENT" not in create_sql.upper():
        raise ValueError("no `id INTEGER PRIMARY KEY` column to make AUTOINCREMENT")
    return changed


def rebuild_with_autoincrement(conn: sqlite3.Connection, targets: Iterable[str]) -> None:
    """Give `targets` AUTOINCREMENT ids, keeping every row, index, trigger and foreign key. Call in a transaction."""
    targets = set(targets)
    graph = _closure(conn, targets)
    order = _parents_first(graph)
    saved = {}
    for table in order:
        create, extras, columns = _definition(conn, table)
        saved[table] = (with_autoincrement(create) if table in targets else create, extras, columns)
        conn.execute(f'CREATE TEMP TABLE "keep_{table}" AS SELECT * FROM main."{table}"')
    for table in reversed(order):
        conn.execute(f'DROP TABLE main."{table}"')
    for table in order:
        create, _, columns = saved[table]
        conn.execute(create)
        names = ", ".join(f'"{c}"' for c in columns)
        conn.execute(f'INSERT INTO main."{table}" ({names}) SELECT {names} FROM temp."keep_{table}" ORDER BY rowid')
        conn.execute(f'DROP TABLE temp."keep_{table}"')
    for table in order:
        for sql in saved[table][1]:
            conn.execute(sql)
    problems = conn.execute("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise sqlite3.IntegrityError(f"rebuilding ids broke {len(problems)} foreign key(s), e.g. {tuple(problems[0])}")
