"""The ONE table where errors become HTTP answers, and its two renderers (native and OpenAI's).

The engine's exceptions (``runners.errors``) know nothing of HTTP: they carry a message written for
the user and the field at fault. The HTTP layer's own refusals (no key, a body that is slow, idle,
too large, malformed or of the wrong type, too many at once, an unknown path or method) are the
exceptions defined here. :data:`ERROR_TABLE` gives each class its status, its ``Retry-After`` and its
OpenAI ``type``/``code``; a subclass not listed takes its nearest listed base. Anything else escaping
a request is a bug: a 500 without details, logged with its traceback.

**Retry-After, one rule.** Only refusals that pass with time say when to come back, and there are two
kinds of time:

* *busy* (:data:`BUSY_RETRY_AFTER_S`, 2 s): every request slot, upload slot or queue place is taken
  (429 from admission and the upload guard, 503 from the scheduler's full queue). A slot frees when
  one request finishes, which takes seconds; a short wait spreads the retries without idling the
  service.
* *loading* (:data:`LOADING_RETRY_AFTER_S`, 10 s): the model is loading (or its load failed and the
  next request tries again). Loading takes tens of seconds to minutes; polling faster only adds load.

Other refusals (bad input, a folder that cannot be written) carry no Retry-After: waiting changes
nothing.

Renderers: the native routes answer ``{error, field}``; under ``/v1`` answers take OpenAI's shape
``{"error": {message, type, param, code}}`` (``field`` becomes ``param``). The shape is chosen by the
path, so a refusal looks the same whichever layer makes it: the ASGI middlewares answer through
:func:`send_error`, the routes and FastAPI's validation through :func:`error_response`.

A route whose request names fields differently from the engine declares it once with
:func:`field_names` (a FastAPI dependency): its errors then name the field as the client sent it, in
``field``/``param`` and in the message.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from runners import privacy
from runners.errors import (
    ConflictError,
    EngineUnavailableError,
    InputTooLargeError,
    InvalidInputError,
    NotFoundError,
    QueueFullError,
    RequestAbortedError,
    StorageUnavailableError,
)

log = logging.getLogger("editx.api")

BUSY_RETRY_AFTER_S = 2  # all slots taken: one frees when a request finishes (seconds)
LOADING_RETRY_AFTER_S = 10  # the model loads (tens of seconds to minutes)


# ---------------------------------------------------------------- the HTTP layer's own refusals
class Refusal(Exception):
    """A refusal made by the HTTP layer itself (not by the engine); the table gives its status."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(Refusal):
    """No valid API key."""


class MalformedBody(Refusal):
    """The body cannot be parsed: not UTF-8, not JSON, not a JSON object, a broken multipart form."""


class UnsupportedMediaType(Refusal):
    """The body is not of the type the route takes (multipart/form-data or application/json)."""


class BodyTooLarge(Refusal):
    """The body is over the size limit (refused from Content-Length or while it streams)."""


class BodyTimeout(Refusal):
    """The body did not arrive within EDITX_UPLOAD_TIMEOUT_S, or sent nothing for EDITX_UPLOAD_IDLE_S."""


class Busy(Refusal):
    """Every request slot (EDITX_MAX_REQUESTS) or upload slot (EDITX_MAX_UPLOADS) is taken."""


class RouteNotFound(Refusal):
    """No route has this path."""


class MethodNotAllowed(Refusal):
    """The path exists, not with this method."""


class InternalError(Refusal):
    """A bug: answered without details (the log has the traceback)."""


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class ErrorRule:
    """How one kind of error is answered."""

    status: int
    retry_after_s: int | None  # BUSY_RETRY_AFTER_S, LOADING_RETRY_AFTER_S or None (waiting changes nothing)
    openai_type: str  # OpenAI's error.type
    code: str  # OpenAI's error.code (a stable name a client can branch on)


ERROR_TABLE: Mapping[type[BaseException], ErrorRule] = MappingProxyType({
    # the engine's errors (runners.errors)
    InvalidInputError: ErrorRule(400, None, "invalid_request_error", "invalid_value"),
    InputTooLargeError: ErrorRule(413, None, "invalid_request_error", "too_large"),
    NotFoundError: ErrorRule(404, None, "not_found_error", "not_found"),
    ConflictError: ErrorRule(409, None, "conflict_error", "conflict"),
    EngineUnavailableError: ErrorRule(503, LOADING_RETRY_AFTER_S, "service_unavailable_error", "model_unavailable"),
    QueueFullError: ErrorRule(503, BUSY_RETRY_AFTER_S, "service_unavailable_error", "queue_full"),
    StorageUnavailableError: ErrorRule(503, None, "service_unavailable_error", "storage_unavailable"),
    RequestAbortedError: ErrorRule(499, None, "request_aborted", "aborted"),  # nobody reads it: the client left
    # the HTTP layer's own refusals
    Unauthorized: ErrorRule(401, None, "authentication_error", "invalid_api_key"),
    MalformedBody: ErrorRule(400, None, "invalid_request_error", "malformed_body"),
    UnsupportedMediaType: ErrorRule(415, None, "invalid_request_error", "unsupported_media_type"),
    BodyTooLarge: ErrorRule(413, None, "invalid_request_error", "too_large"),
    BodyTimeout: ErrorRule(408, None, "timeout_error", "body_timeout"),
    Busy: ErrorRule(429, BUSY_RETRY_AFTER_S, "rate_limit_error", "rate_limit_exceeded"),
    RouteNotFound: ErrorRule(404, None, "not_found_error", "not_found"),
    MethodNotAllowed: ErrorRule(405, None, "invalid_request_error", "method_not_allowed"),
    InternalError: ErrorRule(500, None, "server_error", "internal_error"),
})

# Starlette's and FastAPI's own refusals (HTTPException) by status, as the table's classes.
_BY_STATUS: dict[int, type[Refusal]] = {400: MalformedBody, 401: Unauthorized, 404: RouteNotFound,
                                        405: MethodNotAllowed, 408: BodyTimeout, 413: BodyTooLarge,
                                        415: UnsupportedMediaType, 429: Busy}


def rule_for(exc: BaseException) -> ErrorRule | None:
    """The table's rule for ``exc`` (its nearest listed class); None for a bug."""
    for kind in type(exc).__mro__:
        rule = ERROR_TABLE.get(kind)
        if rule is not None:
            return rule
    return None


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is answered by the table (a refusal) rather than as a bug."""
    return rule_for(exc) is not None


def retry_headers(rule: ErrorRule) -> dict[str, str]:
    return {"Retry-After": str(rule.retry_after_s)} if rule.retry_after_s is not None else {}


# ---------------------------------------------------------------- the two renderers
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


ErrorRenderer = Callable[[ErrorRule, str, "str | None"], dict[str, Any]]


def native_error_body(rule: ErrorRule, message: str, field: str | None) -> dict[str, Any]:
    return ErrorBody(error=message, field=field).model_dump()


def openai_error_body(rule: ErrorRule, message: str, field: str | None) -> dict[str, Any]:
    detail = OpenAIErrorDetail(message=message, type=rule.openai_type, param=field, code=rule.code)
    return OpenAIErrorBody(error=detail).model_dump()


# Path prefix → renderer; the longest matching prefix wins, "" is the native shape.
_SHAPES: dict[str, ErrorRenderer] = {"": native_error_body, "/v1": openai_error_body}


def register_error_shape(prefix: str, renderer: ErrorRenderer) -> None:
    """Make every refusal under ``prefix`` (from any layer) use ``renderer(rule, message, field)``."""
    _SHAPES[prefix.rstrip("/")] = renderer


def renderer_for(path: str) -> ErrorRenderer:
    prefix = max((p for p in _SHAPES if p == "" or path == p or path.startswith(p + "/")), key=len)
    return _SHAPES[prefix]


def is_openai_path(path: str) -> bool:
    return renderer_for(path) is openai_error_body


# ---------------------------------------------------------------- field names as the client sent them
FIELD_NAMES_SCOPE_KEY = "editx.field_names"


def field_names(**engine_to_route: str) -> Any:
    """Declare on a route how the engine's field names read in its request, e.g. ``target_text="input"``.

    Used as ``@router.post(path, dependencies=[field_names(target_text="input", prompt_audio="voice")])``.
    Every error of that route then names the route's field: in ``field``/``param`` and wherever its
    message quotes the engine's name ("target_text has 10001 characters" → "input has 10001 characters").
    """
    aliases = MappingProxyType(dict(engine_to_route))

    def declare(request: Request) -> None:
        request.scope[FIELD_NAMES_SCOPE_KEY] = aliases

    return Depends(declare)


def rename_fields(message: str, field: str | None, aliases: Mapping[str, str] | None) -> tuple[str, str | None]:
    """``message`` and ``field`` with each engine field name replaced by the route's (whole words only)."""
    if not aliases:
        return message, field
    pattern = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, sorted(aliases, key=len, reverse=True)))
                         + r")(?![A-Za-z0-9_])")
    return pattern.sub(lambda m: aliases[m.group(1)], message), aliases.get(field, field) if field else field


# ---------------------------------------------------------------- answering
@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def as_refusal(exc: BaseException) -> BaseException:
    """FastAPI's validation errors and Starlette's HTTPExceptions as the table's classes; others unchanged."""
    if isinstance(exc, RequestValidationError):
        return validation_error(exc)
    if isinstance(exc, StarletteHTTPException):
        kind = _BY_STATUS.get(exc.status_code, InternalError if exc.status_code >= 500 else MalformedBody)
        return kind(str(exc.detail))
    return exc


def answer_for(exc: BaseException, path: str, aliases: Mapping[str, str] | None = None,
               level: int | None = None) -> ErrorAnswer:
    """Status, body (in ``path``'s shape) and headers for ``exc``, and the log line.

    The HTTP layer's refusals (a malformed body, no key, busy) are logged at INFO, the engine's at WARNING
    (an operator looks for refused work there), a bug at ERROR with its traceback; ``level`` overrides.
    """
    exc = as_refusal(exc)
    rule = rule_for(exc)
    if rule is None:
        log.error("unexpected error", exc_info=exc)
        rule, message, field = ERROR_TABLE[InternalError], "internal error; see the server log", None
    else:
        message, field = rename_fields(str(exc), getattr(exc, "field", None), aliases)
        if level is None:
            level = logging.INFO if isinstance(exc, Refusal) else logging.WARNING
        log.log(level, "refused with %d: %s", rule.status, privacy.redact(message), extra={"stage": "request"})
    return ErrorAnswer(rule.status, renderer_for(path)(rule, message, field), retry_headers(rule))


def error_response(exc: BaseException, path: str = "", aliases: Mapping[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """``exc`` as the routes under ``path`` answer it (500 without details for a bug)."""
    out = answer_for(exc, path, aliases)
    return JSONResponse(out.body, status_code=out.status, headers={**out.headers, **(headers or {})} or None)


Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def send_error(send: Send, path: str, exc: BaseException, headers: dict[str, str] | None = None, *,
                     close: bool = False, level: int | None = None) -> None:
    """Answer ``exc`` from an ASGI middleware, through the table, in the shape of ``path``'s surface."""
    out = answer_for(exc, path, level=level)
    body = json.dumps(out.body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in {**out.headers, **(headers or {})}.items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": out.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def validation_error(exc: RequestValidationError) -> InvalidInputError:
    """FastAPI's request validation failure as the one user error naming the first bad field."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path", "header", "form")]
    field = ".".join(loc) or None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = f"{field or 'a field'} is required"
    elif field and field not in message:
        message = f"{field}: {message}"
    elif not field:
        message = f"request body: {message}"
    return InvalidInputError(message, field=field)


def install_error_handlers(app: FastAPI) -> None:
    """One exception handler per error kind on the FastAPI app, instead of a try/except per route."""

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, request.url.path, request.scope.get(FIELD_NAMES_SCOPE_KEY),
                              headers=dict(getattr(exc, "headers", None) or {}) or None)

    for kind in ERROR_TABLE:
        app.add_exception_handler(kind, on_error)
    app.add_exception_handler(RequestValidationError, on_error)
    app.add_exception_handler(StarletteHTTPException, on_error)


# ---------------------------------------------------------------- unmatched paths and methods
_PLAIN_REFUSALS = {404: RouteNotFound, 405: MethodNotAllowed}


class PlainRefusalMiddleware:
    """Starlette's plain-text 404/405 (BentoML's router answers unknown paths itself) through the table.

    Only a text/plain 404 or 405 is replaced: every JSON answer is the route's own, and the UI's pages
    (HTML) stay as Gradio makes them.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[..., Awaitable[Any]],
                       send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: MutableMapping[str, Any] | None = None
        replaced = False

        async def watch(message: MutableMapping[str, Any]) -> None:
            nonlocal held, replaced
            if message["type"] == "http.response.start" and message["status"] in _PLAIN_REFUSALS:
                ctype = dict(message.get("headers", [])).get(b"content-type", b"")
                if ctype.startswith(b"text/plain"):
                    held = message
                    return
            if held is not None and message["type"] == "http.response.body":
                if not replaced:
                    replaced = True
                    kind = _PLAIN_REFUSALS[held["status"]]
                    method, path = scope.get("method"), scope["path"]
                    text = (f"no route {method} {path}" if kind is RouteNotFound
                            else f"{method} is not allowed on {path}")
                    allow = {k.decode("latin-1"): v.decode("latin-1") for k, v in held.get("headers", [])
                             if k.lower() == b"allow"}
                    await send_error(send, path, kind(text), allow or None)
                return
            await send(message)

        await self.app(scope, receive, watch)


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
