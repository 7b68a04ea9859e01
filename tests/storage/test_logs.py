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


@pytest.fixture
def console_logs(tmp_path):
    factory = logging.getLogRecordFactory()
    stream = io.StringIO()
    log_file = tmp_path / "data" / "likeness.log"
    configure_logging("INFO", stream=stream, log_file=log_file, stream_level="WARNING")
    yield stream, log_file
    logging.captureWarnings(False)
    logging.setLogRecordFactory(factory)
    for handler in list(logging.getLogger().handlers):
        handler.close()
    logging.getLogger().handlers.clear()


def test_console_terminal_shows_our_warnings_and_the_log_file_keeps_library_chatter(console_logs):
    import warnings

    stream, log_file = console_logs
    logging.getLogger("some_library.loaders").warning("No LoRA keys associated to CLIPTextModel")
    logging.getLogger("bitsandbytes.cextension").warning("The installed version of bitsandbytes lacks GPU kernels")
    with warnings.catch_warnings():  # pytest records warnings itself; route this one as the entry point does
        warnings.simplefilter("always")
        logging.captureWarnings(False)
        logging.captureWarnings(True)
        warnings.warn("requires torchvision", UserWarning, stacklevel=1)
    logging.getLogger("trainer.worker").info("worker started")
    logging.getLogger("bot.supervisor").warning("worker exited with 1")
    shown = stream.getvalue()
    kept = log_file.read_text()
    assert shown.count("\n") == 1 and "worker exited with 1" in shown
    for line in ("No LoRA keys associated", "lacks GPU kernels", "requires torchvision", "worker started",
                 "worker exited with 1"):
        assert line in kept
