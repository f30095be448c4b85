"""Errors of the /v1 routes in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

OpenAI's clients pick their exception by status (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 409 ConflictError, 413, 429 RateLimitError,
503 …), and show ``message``. One route class maps every error raised by a /v1 route, so
no route carries its own try/except; the native routes keep their ``{error, field}`` body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from api.errors import openai_error_body, retry_headers
from runners import privacy
from runners.errors import USER_ERRORS, RequestAbortedError

log = logging.getLogger("editx.api.openai")

_CODES = {404: "not_found", 409: "conflict", 413: "too_large", 499: "aborted", 503: "unavailable"}


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error body (the one definition in api.errors, shared with the middlewares' refusals)."""
    body = openai_error_body(status, message, param)
    body["error"]["code"] = body["error"].get("code") or code or _CODES.get(status)
    return JSONResponse(body, status_code=status, headers={**retry_headers(status), **(headers or {})} or None)


def error_to_response(exc: Exception) -> JSONResponse:
    """The one mapping from an exception raised under /v1 to its answer."""
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
        param = ".".join(loc) or None
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        if first.get("type") == "missing":
            message = f"{param} is required"
        elif first.get("type") == "literal_error" and param:
            message = f"{param}: {message}"
        elif param and param not in message:
            message = f"{param}: {message}"
        log.warning("refused with 400: %s", message, extra={"stage": "request"})
        return openai_error(400, message, param=param)
    if isinstance(exc, HTTPException):
        return openai_error(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}) or None)
    if isinstance(exc, USER_ERRORS):
        status = int(getattr(exc, "status_code", 400))
        log.warning("refused with %d: %s", status, privacy.redact(str(exc)), extra={"stage": "request"})
        retry = getattr(exc, "retry_after_s", None)
        headers = {"Retry-After": str(retry)} if retry is not None and status in (429, 503) else None
        return openai_error(status, str(exc), param=getattr(exc, "field", None), headers=headers)
    if isinstance(exc, RequestAbortedError):  # the client went away: nobody reads this answer
        log.info("request aborted: %s", exc, extra={"stage": "request"})
        return openai_error(499, str(exc) or "the request was aborted", code="aborted")
    log.exception("unexpected error", exc_info=exc)
    return openai_error(500, "internal error; see the server log", code="internal_error")


class OpenAIRoute(APIRoute):
    """An APIRoute whose errors (validation included) are answered in OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - every error becomes an answer; bugs are logged
                return error_to_response(exc)

        return handle
