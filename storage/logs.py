"""Logging set-up for the entry points (the bot, the worker, the console). Library modules only call
`logging.getLogger(__name__)`.

Secrets are redacted when a record is CREATED (a log-record factory), so every handler sees the clean text:
our stream handler, a test's capture, or any handler a library adds.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Iterable

REDACTED = "[redacted]"
_base_factory = logging.getLogRecordFactory()


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


def configure_logging(level: str = "INFO", *, secrets: Iterable[str] = (), stream=None) -> logging.Handler:
    """Configure the root logger once: one stream handler, and redaction of the given secrets everywhere."""
    logging.setLogRecordFactory(SecretRedactor(secrets))
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet = max(logging.INFO, logging.getLevelName(level))
    for noisy in ("discord", "httpx", "urllib3", "PIL", "filelock"):
        logging.getLogger(noisy).setLevel(quiet)
    return handler
