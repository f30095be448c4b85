"""The ONE place where errors become HTTP answers: ``{error, field}`` on the native routes.

Errors meant for users carry their status and the field at fault
(``runners.errors``); anything else escaping a request is a bug and answers a
500 without details.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from runners.errors import USER_ERRORS, InvalidInputError

log = logging.getLogger("editx.api")

RETRY_AFTER_S = 10  # what a 503 (model loading, queue full) tells the client to wait


class ErrorBody(BaseModel):
    """What every 4xx/5xx answer of the native routes carries."""

    error: str = Field(description="what is wrong and how to fix it")
    field: str | None = Field(None, description="the request field at fault, when there is one")


def error_status(exc: BaseException) -> int | None:
    """The HTTP status of an error this service knows; None for a bug (→ 500)."""
    if isinstance(exc, USER_ERRORS):
        return int(exc.status_code)
    return None


def error_response(exc: BaseException) -> JSONResponse:
    """An engine error as the native routes answer it (500 without details for a bug)."""
    status = error_status(exc)
    if status is None:
        log.exception("unexpected error", exc_info=exc)
        body = ErrorBody(error="internal error; see the server log")
        return JSONResponse(body.model_dump(), status_code=500)
    body = ErrorBody(error=str(exc), field=getattr(exc, "field", None))
    log.warning("refused with %d: %s", status, body.error, extra={"stage": "request"})
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def validation_error(exc: RequestValidationError) -> InvalidInputError:
    """FastAPI's request validation failure as the one user error naming the first bad field."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("query", "body", "path", "header")]
    field = ".".join(loc) or None
    return InvalidInputError(f"{field or 'request'}: {first.get('msg', 'invalid value')}", field=field)


def install_error_handlers(app: FastAPI) -> None:
    """One exception handler per error kind on the native FastAPI app, instead of a try/except per route."""

    async def on_user_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    for kind in USER_ERRORS:
        app.add_exception_handler(kind, on_user_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
