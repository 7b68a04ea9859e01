"""Logging set-up for the entry points (the bot, the worker, the console). Library modules only call
`logging.getLogger(__name__)`.

Secrets are redacted when a record is CREATED (a log-record factory), so every handler sees the clean text:
our stream handler, a test's capture, or any handler a library adds.
"""

from __future__ import annotations

import errno
import logging
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

REDACTED = "[redacted]"
_base_factory = logging.getLogRecordFactory()
FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


class SecretRedactor:
    """A log-record factory that replaces secret values in the message, its arguments and its traceback."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = _base_factory(*args, **kwargs)
        if not self.secrets:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must still be logged, and cleaned
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = self.clean(message), None
        if record.exc_info:
            record.exc_text = self.clean("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        return record


OWN_PACKAGES = ("bot", "intake", "storage", "trainer", "bench", "__main__")
# Environment for processes that load model libraries: no progress bars (they would fill the log).
QUIET_LIBRARIES_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


class OwnRecords(logging.Filter):
    """Passes records from Likeness's own packages only, so library chatter stays in the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OWN_PACKAGES


def configure_logging(
    level: str = "INFO", *, secrets: Iterable[str] = (), stream=None, log_file: Path | None = None,
    stream_level: str | None = None,
) -> logging.Handler:
    """Configure the root logger once: a stream handler, an optional log file, and redaction of the given secrets.

    With `stream_level` set (the console), the stream shows only our own records at that level or above; the
    log file keeps everything at `level`, Python warnings and library messages included.
    """
    logging.setLogRecordFactory(SecretRedactor(secrets))
    logging.captureWarnings(True)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(FORMAT)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if stream_level is not None:
        handler.setLevel(stream_level)
        handler.addFilter(OwnRecords())
    if log_file is not None:
        root.addHandler(_file_handler(log_file))
    quiet = max(logging.INFO, logging.getLevelName(level))
    for noisy in ("discord", "httpx", "urllib3", "PIL", "filelock"):
        logging.getLogger(noisy).setLevel(quiet)
    return handler


class LogFileHandler(logging.FileHandler):
    """The log file. On a full disk a record that cannot be written is dropped quietly: logging's default would
    print a traceback on the terminal for every line, in the middle of the one-line message that says so."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return
        super().handleError(record)


def _file_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = LogFileHandler(path, encoding="utf-8")
    handler.setFormatter(FORMAT)
    return handler
