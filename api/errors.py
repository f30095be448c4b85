"""The ONE place where errors become HTTP answers: ``{error, field}`` on the native routes.

Errors meant for users carry their status and the field at fault
(``runners.errors``); anything else escaping a request is a bug and answers a
500 without details. Under ``/v1`` the answers take OpenAI's shape
(``{"error": {message, type, param, code}}``); :func:`register_error_shape`
lets a surface bring its own renderer, and the ASGI middlewares (auth, upload
cap, admission) answer through :func:`send_error`, so a refusal looks the same
whichever layer makes it.
"""

from __future__ import annotations

import logging

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from runners import privacy
from runners.errors import USER_ERRORS, InvalidInputError

log = logging.getLogger("editx.api")

RETRY_AFTER_S = 10  # what a 503 (model loading, queue full) tells the client to wait


class ErrorBody(BaseModel):
    """What every 4xx/5xx answer of the native routes carries."""

    error: str = Field(description="what is wrong and how to fix it")
    field: str | None = Field(None, description="the request field at fault, when there is one")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    """The error shape of the OpenAI-compatible routes under /v1 (what the ``openai`` client parses)."""

    error: OpenAIErrorDetail


ErrorRenderer = Callable[[int, str, "str | None"], dict[str, Any]]
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 408: "timeout_error", 409: "conflict_error", 413: "invalid_request_error",
                 415: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable_error"}


def native_error_body(status: int, message: str, field: str | None) -> dict[str, Any]:
    return ErrorBody(error=message, field=field).model_dump()


def openai_error_body(status: int, message: str, field: str | None) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
    return OpenAIErrorBody(error=OpenAIErrorDetail(message=message, type=kind, param=field, code=code)).model_dump()


# Path prefix → renderer; the longest matching prefix wins, "" is the native shape.
_SHAPES: dict[str, ErrorRenderer] = {"": native_error_body, "/v1": openai_error_body}


def register_error_shape(prefix: str, renderer: ErrorRenderer) -> None:
    """Make every refusal under ``prefix`` (from any layer) use ``renderer(status, message, field)``."""
    _SHAPES[prefix.rstrip("/")] = renderer


def error_body(path: str, status: int, message: str, field: str | None = None) -> dict[str, Any]:
    """The error body for ``path`` in the shape of its surface."""
    prefix = max((p for p in _SHAPES if path == p or path.startswith(p + "/") or p == ""), key=len)
    return _SHAPES[prefix](status, message, field)


def retry_headers(status: int) -> dict[str, str]:
    """Refusals that pass with time (busy, loading) say when to come back."""
    return {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else {}


Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def send_error(send: Send, path: str, status: int, message: str, field: str | None = None,
                     headers: dict[str, str] | None = None, *, close: bool = False) -> None:
    """Answer from an ASGI middleware, in the one error shape of ``path``'s surface."""
    body = json.dumps(error_body(path, status, message, field)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in {**retry_headers(status), **(headers or {})}.items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def error_status(exc: BaseException) -> int | None:
    """The HTTP status of an error this service knows; None for a bug (→ 500)."""
    if isinstance(exc, USER_ERRORS):
        return int(exc.status_code)
    return None


def error_response(exc: BaseException, path: str = "") -> JSONResponse:
    """An engine error as the routes under ``path`` answer it (500 without details for a bug)."""
    status = error_status(exc)
    if status is None:
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse(error_body(path, 500, "internal error; see the server log"), status_code=500)
    message, field = str(exc), getattr(exc, "field", None)
    log.warning("refused with %d: %s", status, privacy.redact(message), extra={"stage": "request"})
    return JSONResponse(error_body(path, status, message, field), status_code=status,
                        headers=retry_headers(status) or None)


def validation_error(exc: RequestValidationError) -> InvalidInputError:
    """FastAPI's request validation failure as the one user error naming the first bad field."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("query", "body", "path", "header")]
    field = ".".join(loc) or None
    return InvalidInputError(f"{field or 'request'}: {first.get('msg', 'invalid value')}", field=field)


def install_error_handlers(app: FastAPI) -> None:
    """One exception handler per error kind on the native FastAPI app, instead of a try/except per route."""

    async def on_user_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc), request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's own refusals (bad multipart, 404, 405) in the same shape, at INFO: the client erred.
        assert isinstance(exc, StarletteHTTPException)
        log.info("refused with %d: %s", exc.status_code, privacy.redact(str(exc.detail)), extra={"stage": "request"})
        return JSONResponse(error_body(request.url.path, exc.status_code, str(exc.detail)),
                            status_code=exc.status_code, headers={**(exc.headers or {}),
                                                                  **retry_headers(exc.status_code)} or None)

    for kind in USER_ERRORS:
        app.add_exception_handler(kind, on_user_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


class QuietValidationErrors:
    """A logging filter for BentoML's request logger: a client's validation error is INFO, without traceback.

    BentoML logs every 400 it answers at ERROR with the traceback; the forms are checked before it sees
    them, so this only catches what slips through (e.g. a JSON API added later).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ == "ValidationError":
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"refused with 400: {exc.__class__.__name__} ({getattr(exc, 'error_count', lambda: '?')()} errors)"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def quiet_bentoml_validation_errors() -> None:
    """Install :class:`QuietValidationErrors` on BentoML's request logger (idempotent)."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, QuietValidationErrors) for f in logger.filters):
        logger.addFilter(QuietValidationErrors())
