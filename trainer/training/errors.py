"""The one error type a training job fails with: a code, one plain sentence and a suggestion."""

from __future__ import annotations


class TrainingError(Exception):
    """A job that cannot finish, explained for the person who asked for it.

    Codes: bad_photo, out_of_memory, model_unavailable, nf4_needs_gpu, no_gpu, diverged, dependency_version.
    """

    def __init__(self, code: str, message: str, suggestion: str = ""):
        self.code = code
        self.message = message
        self.suggestion = suggestion
        super().__init__(f"{message} {suggestion}".strip())

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "suggestion": self.suggestion}
