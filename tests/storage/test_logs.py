"""The Discord token never appears in a log record, whichever handler reads it."""

import io
import logging

import pytest

from storage.logs import REDACTED, configure_logging
from storage.settings import load_settings

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.secret-token-value-0123456789"


@pytest.fixture
def redacting_logs(caplog):
    factory = logging.getLogRecordFactory()
    stream = io.StringIO()
    configure_logging("DEBUG", secrets=[TOKEN], stream=stream)
    yield stream
    logging.setLogRecordFactory(factory)
    logging.getLogger().handlers.clear()


def test_token_is_redacted_in_messages_arguments_and_tracebacks(redacting_logs, caplog):
    log = logging.getLogger("likeness.test")
    caplog.set_level(logging.DEBUG)
    log.info("connecting with %s", TOKEN)
    log.warning(f"header was Bot {TOKEN}")
    try:
        raise RuntimeError(f"login failed for token {TOKEN}")
    except RuntimeError:
        log.exception("discord login failed")
    log.error("bad format %s %s", TOKEN)  # a broken format string is still cleaned
    captured = redacting_logs.getvalue() + caplog.text
    for record in caplog.records:
        captured += record.getMessage() + (record.exc_text or "")
    assert TOKEN not in captured
    assert captured.count(REDACTED) >= 4
    assert "login failed for token" in captured  # the useful part of the traceback is kept


def test_settings_never_print_the_token(monkeypatch):
    monkeypatch.setenv("LIKENESS_DISCORD_TOKEN", TOKEN)
    settings = load_settings()
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
    assert TOKEN not in str(settings.model_dump())
    assert "LIKENESS_DISCORD_TOKEN" not in settings.worker_env()
    assert settings.discord_token.get_secret_value() == TOKEN
