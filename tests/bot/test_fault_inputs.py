"""Smaller findings of issue 18: out-of-range ids get a clear answer and break nothing later, and a taken trigger
gets the same answer whoever owns it and whether or not it is private."""

from __future__ import annotations

import io

import pytest

from bot.console import ConsoleSession
from bot.services import ServiceError, Services
from bot.services.training import TrainRequest
from storage import consent
from storage.db import AsyncDatabase
from storage.files import FileStore
from storage.forget import tombstone_user
from storage.subjects import ensure_user
from tests.bot.services.conftest import add_subject, make_settings, requester

ALICE, BOB, CAROL, DAN = 101, 202, 303, 404


@pytest.fixture
async def services(tmp_path):
    settings = make_settings(tmp_path)
    db = await AsyncDatabase.open(settings.database_path)
    yield Services.build(settings, db, FileStore(settings.store_dir))
    await db.close()


async def test_out_of_range_ids_get_one_clear_line_and_later_commands_still_work(services, tmp_path):
    out = io.StringIO()
    session = ConsoleSession(services, out_dir=tmp_path / "out", stdout=out, waits=False)
    await session.run(["as 99999999999999999999", "cancel 99999999999999999999", "whoami",
                       "as 9223372036854775807", "whoami", "status"])
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("error: user id `99999999999999999999` is out of range")
    assert lines[1].startswith("error: job `99999999999999999999` is out of range")
    assert lines[2] == "user 1 (you)"
    assert lines[4].startswith("user 9223372036854775807")
    assert "Traceback" not in out.getvalue() and "OverflowError" not in out.getvalue()


async def _refusal(services, trigger: str) -> str:
    with pytest.raises(ServiceError) as error:
        await services.training.start(requester(ALICE), TrainRequest(trigger=trigger, class_noun="person"))
    assert error.value.code == "bad_trigger"
    return error.value.message.replace(trigger, "<trigger>")


async def test_a_private_trigger_gets_the_same_answer_as_any_taken_one(services):
    await services.db.run(add_subject, BOB, "rral")  # private to Bob
    shared = await services.db.run(add_subject, CAROL, "qqzx")
    await services.db.run(ensure_user, ALICE, "Alice")
    await services.db.run(consent.grant_access, shared.id, user_id=ALICE)  # shared with Alice
    await services.db.run(add_subject, DAN, "vvkm")
    await services.db.run(tombstone_user, DAN)  # deleted, its trigger still reserved until the sweep
    answers = {await _refusal(services, trigger) for trigger in ("rral", "rra1", "qqzx", "vvkm")}
    assert len(answers) == 1
    (answer,) = answers
    assert "already used" not in answer and "here" not in answer and "not available" in answer
