"""Start-up checks of the database file: a damaged or emptied database is refused with one clear line.

Run before anything opens the database, because opening it can make damage permanent: SQLite reads a write-ahead
log only up to its first bad frame, and the first checkpoint after that throws away every later commit. So the WAL
is read here first (the format is SQLite's documented one: a 32-byte header, then frames of a 24-byte header and a
page, each carrying the header's salts and a running checksum), then the file header, then `PRAGMA quick_check`.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

from storage.disk import DiskFullError, describe_free, is_disk_full

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
WAL_MAGICS = (0x377F0682, 0x377F0683)  # checksum words: little-endian for ...82, big-endian for ...83
WAL_HEADER = 32
FRAME_HEADER = 24
CHECK_TIMEOUT_S = 5.0


class DatabaseDamaged(Exception):
    """The database cannot be trusted; the message is one line that says what was found and what to do."""


@dataclass(frozen=True)
class WalReport:
    frames: int  # frames SQLite will read (up to the last valid commit)
    lost_commits: int  # committed transactions after a damaged frame, which SQLite would silently drop
    header_damaged: bool = False


def _checksum(data: bytes, big_endian: bool, s0: int = 0, s1: int = 0) -> tuple[int, int]:
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def read_wal(wal_path: Path) -> WalReport:
    """How much of the WAL SQLite will use, and how many commits a damaged frame hides."""
    data = wal_path.read_bytes() if wal_path.exists() else b""
    if len(data) < WAL_HEADER:
        return WalReport(0, 0)
    magic, _version, page_size, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:WAL_HEADER])
    big = magic == WAL_MAGICS[1]
    if magic not in WAL_MAGICS or _checksum(data[:24], big) != (c1, c2) or page_size < 512:
        has_frames = len(data) > WAL_HEADER and any(data[WAL_HEADER:])
        return WalReport(0, 0, header_damaged=has_frames)
    frame_size = FRAME_HEADER + page_size
    sums, valid, good, lost, broken = (c1, c2), 0, 0, 0, False
    for offset in range(WAL_HEADER, len(data) - frame_size + 1, frame_size):
        header = data[offset:offset + FRAME_HEADER]
        _page, commit, f_salt1, f_salt2, f1, f2 = struct.unpack(">6I", header)
        ours = (f_salt1, f_salt2) == (salt1, salt2)
        if broken:
            lost += int(ours and commit != 0)
            continue
        sums = _checksum(header[:8] + data[offset + FRAME_HEADER:offset + frame_size], big, *sums)
        if not ours or sums != (f1, f2):
            broken = True
            continue
        valid += 1
        if commit:
            good = valid
    return WalReport(good, lost)


def _store_file_count(store_dir: Path | None) -> int:
    if store_dir is None or not store_dir.exists():
        return 0
    return sum(1 for path in store_dir.rglob("*") if path.is_file() and ".tmp-" not in path.name)


def _header_problem(db_path: Path) -> str | None:
    size = db_path.stat().st_size
    with open(db_path, "rb") as fh:
        header = fh.read(100)
    if header[:16] != SQLITE_MAGIC:
        return f"{db_path} is not a SQLite database (its header is damaged)"
    if size < 100:
        return f"{db_path} is truncated ({size} bytes)"
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages = struct.unpack(">I", header[28:32])[0]
    change, valid_for = struct.unpack(">I", header[24:28])[0], struct.unpack(">I", header[92:96])[0]
    if page_size < 512 or page_size & (page_size - 1):
        return f"{db_path} is not a SQLite database (its header is damaged)"
    if size % page_size or (change == valid_for and size < pages * page_size):
        return f"{db_path} is truncated ({size} bytes, {pages} pages of {page_size} expected)"
    return None


def _disk_full_instead(exc: sqlite3.Error, db_path: Path) -> None:
    """Opening a WAL database writes its -shm file: on a full disk that fails as "disk I/O error", which is not
    damage. Raise DiskFullError (with the free space) then."""
    if is_disk_full(exc, db_path.parent):
        raise DiskFullError(f"the disk is full ({describe_free(db_path.parent)}), so {db_path.name} cannot even be "
                            "opened; it is not damaged. Free some space, then try again.") from None


def _quick_check(db_path: Path) -> tuple[str | None, bool]:
    """(problem, has_schema) from SQLite itself; never waits long for a lock. DiskFullError on a full disk."""
    try:
        conn = sqlite3.connect(db_path, timeout=CHECK_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        _disk_full_instead(exc, db_path)
        return f"{db_path} cannot be opened ({exc})", False
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        _disk_full_instead(exc, db_path)
        return f"{db_path} is damaged ({exc})", False
    finally:
        conn.close()
    if [tuple(row) for row in rows] != [("ok",)]:
        detail = " ".join(" ".join(str(row[0]) for row in rows).split())[:200]  # one line, whatever SQLite says
        return f"{db_path} is damaged (quick_check: {detail})", True
    return None, "schema_migrations" in tables


def find_problem(db_path: Path, store_dir: Path | None = None) -> str | None:
    """What is wrong with the database, or None. A missing or empty database is fine only next to an empty
    store: otherwise the data was lost and starting would silently begin again from nothing."""
    stored = _store_file_count(store_dir)
    empty_line = ("{what}, but the store holds {n} file(s): the data was lost or replaced, and starting now "
                  "would silently begin again from nothing")
    if not db_path.exists() or db_path.stat().st_size == 0:
        what = f"{db_path} is missing" if not db_path.exists() else f"{db_path} is empty (0 bytes)"
        return empty_line.format(what=what, n=stored) if stored else None
    wal = read_wal(db_path.with_name(db_path.name + "-wal"))
    if wal.header_damaged:
        return f"{db_path}-wal is damaged (bad header), so recent writes would be ignored"
    if wal.lost_commits:
        return (f"{db_path}-wal is damaged after frame {wal.frames}: {wal.lost_commits} later committed "
                f"write(s) would be silently dropped")
    problem = _header_problem(db_path)
    if problem is None:
        problem, has_schema = _quick_check(db_path)
        if problem is None and not has_schema and stored:
            return empty_line.format(what=f"{db_path} has no Likeness tables", n=stored)
    return problem


def check_database(db_path: Path, store_dir: Path | None = None, backups_dir: Path | None = None) -> None:
    """Raise DatabaseDamaged with one line (what was found, and the restore command) if the database is unusable."""
    problem = find_problem(Path(db_path), store_dir)
    if problem is None:
        return
    newest = newest_backup(backups_dir)
    advice = (f"restore the newest backup ({newest.name}) with `./run-bot restore`" if newest is not None
              else "no backup was found to restore; stop here and recover the file, or move it aside to start over")
    raise DatabaseDamaged(f"{problem}; {advice}.")


def newest_backup(backups_dir: Path | None) -> Path | None:
    if backups_dir is None or not backups_dir.exists():
        return None
    found = sorted(backups_dir.glob("likeness-*.sqlite3"))
    return found[-1] if found else None
