"""Errors the engine raises for requests it refuses, with a message written for the user.

Each carries the name of the offending field so that an API can say which input was wrong, not
only that something was. The engine knows nothing of HTTP: how each error is answered (status,
Retry-After) is decided at the edge, in one table (``api.errors.ERROR_TABLE``).
"""

from __future__ import annotations


class InvalidInputError(ValueError):
    """The request is wrong: the message says what and how to fix it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InputTooLargeError(InvalidInputError):
    """The request is over a size limit (audio length, text length, token budget, upload size)."""


class EngineUnavailableError(RuntimeError):
    """The model is loading, could not be loaded, or is not ready: the same request may succeed later."""

    field: str | None = None


class NotFoundError(LookupError):
    """What the request names does not exist, e.g. an unknown voice id."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class ConflictError(ValueError):
    """The request collides with what exists, e.g. a voice name already taken."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class StorageUnavailableError(EngineUnavailableError):
    """A folder the service needs cannot be written or read, e.g. EDITX_VOICES_DIR (an operator must fix it)."""


# The errors whose message is written for the user; anything else escaping a request is a bug.
USER_ERRORS: tuple[type[Exception], ...] = (InvalidInputError, EngineUnavailableError, NotFoundError, ConflictError)


class QueueFullError(EngineUnavailableError):
    """Every generation slot is busy and the waiting queue is full: retry once a request has finished."""


class RequestAbortedError(RuntimeError):
    """The client went away or cancelled; nothing more is computed for the request."""
