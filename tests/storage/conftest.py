"""One contract suite, run through both ways the code reaches SQLite: plain sqlite3 (the worker) and
aiosqlite (the bot)."""

from collections.abc import Callable
from typing import Any

import pytest

from storage.db import AsyncDatabase, connect
from storage.files import FileStore
from storage.subjects import create_subject, ensure_user


@pytest.fixture(params=["sqlite3", "aiosqlite"])
async def call(request, tmp_path) -> Callable[..., Any]:
    path = tmp_path / "likeness.sqlite3"
    if request.param == "sqlite3":
        conn = connect(path)

        async def run(fn, *args, **kwargs):
            return fn(conn, *args, **kwargs)

        yield run
        conn.close()
    else:
        db = await AsyncDatabase.open(path)
        yield db.run
        await db.close()


@pytest.fixture
def conn(tmp_path):
    connection = connect(tmp_path / "likeness.sqlite3")
    yield connection
    connection.close()


@pytest.fixture
def store(tmp_path) -> FileStore:
    return FileStore(tmp_path / "store")


def make_subject(conn, owner_id: int, trigger: str, **extra):
    ensure_user(conn, owner_id, f"user{owner_id}")
    return create_subject(
        conn, owner_id=owner_id, trigger=trigger, trigger_key=extra.pop("trigger_key", trigger),
        class_noun=extra.pop("class_noun", "person"), display_name=trigger, family="tiny-sd15", **extra,
    )
