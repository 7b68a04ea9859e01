"""Warnings on the console's terminal: product messages, never raw log lines.

The log file keeps every record with its time, level and logger. The terminal shows only Likeness's own warnings
and errors, as one plain line each ("⚠️ The server's disk is nearly full …"): no timestamp, no logger name, no
traceback. Each line is printed through whatever `sys.stdout` is at that moment, which under the live prompt is
prompt_toolkit's patched stdout, so the line appears above the prompt instead of being glued to it.
"""

from __future__ import annotations

import logging
import sys

from storage.logs import OwnRecords

WARNING_ICON = "\u26a0\ufe0f"
# Records the console reports itself, in its own words, right after logging them.
SELF_REPORTED = ("bot.console",)


class _NotSelfReported(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name not in SELF_REPORTED


def product_line(record: logging.LogRecord) -> str:
    """The record's message alone, on one line, with a warning sign."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: still say something
        message = str(record.msg)
    text = " ".join(message.split())
    if text.lower().startswith("likeness: "):
        text = text[len("likeness: "):]
    return f"{WARNING_ICON} {text[:1].upper()}{text[1:]}"


class TerminalWarnings(logging.Handler):
    """Our own warnings as product lines on the terminal (see the module's docstring)."""

    def __init__(self, level: int | str = logging.WARNING) -> None:
        super().__init__(level)
        self.addFilter(OwnRecords())
        self.addFilter(_NotSelfReported())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(product_line(record), file=sys.stdout, flush=True)
        except Exception:
            self.handleError(record)


def show_warnings_as_product_lines(stream_handler: logging.Handler) -> TerminalWarnings:
    """Replace the console's stream handler (storage.logs.configure_logging's) with TerminalWarnings."""
    root = logging.getLogger()
    root.removeHandler(stream_handler)
    handler = TerminalWarnings(stream_handler.level or logging.WARNING)
    root.addHandler(handler)
    return handler
