"""Errors the engine raises for bad requests; entrypoints map them to HTTP 4xx.

Each carries the name of the offending field so that an API can say which
input was wrong, not only that something was.
"""

from __future__ import annotations


class InvalidInputError(ValueError):
    """The request is wrong (HTTP 400/422): the message says what and how to fix it."""

    status_code = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InputTooLargeError(InvalidInputError):
    """The request is over a size limit (HTTP 413)."""

    status_code = 413


class EngineUnavailableError(RuntimeError):
    """The model could not be loaded or is not ready (HTTP 503)."""

    status_code = 503


class NotFoundError(LookupError):
    """What the request names does not exist, e.g. an unknown voice id (HTTP 404)."""

    status_code = 404

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class ConflictError(ValueError):
    """The request collides with what exists, e.g. a voice name already taken (HTTP 409)."""

    status_code = 409

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StorageUnavailableError(EngineUnavailableError):
    """A folder the service needs cannot be written or read, e.g. EDITX_VOICES_DIR (HTTP 503)."""


# The errors whose message is written for the user; anything else escaping a request is a bug.
USER_ERRORS: tuple[type[Exception], ...] = (InvalidInputError, EngineUnavailableError, NotFoundError, ConflictError)


class QueueFullError(EngineUnavailableError):
    """Every generation slot is busy and the waiting queue is full (HTTP 503 with Retry-After)."""

    retry_after_s = 5


class RequestAbortedError(RuntimeError):
    """The client went away or cancelled; nothing more is computed for the request."""

    status_code = 499
