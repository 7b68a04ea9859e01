"""The one error type the front ends show: a code for tests and logs, and one human sentence for the user."""

from __future__ import annotations


class ServiceError(Exception):
    """An expected failure the user caused or can fix. `message` is shown as-is (ephemeral in Discord)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ServiceError({self.code!r}, {self.message!r})"
