"""The route class of the /v1 routes: every error they raise is answered through ``api.errors``' table.

OpenAI's clients pick their exception by status (400 BadRequestError, 401 AuthenticationError,
404 NotFoundError, 409 ConflictError, 413, 429 RateLimitError, 503 …) and show ``message``; the
status, Retry-After and OpenAI's body come from the one table, so no route carries its own
try/except. A route that names fields differently from the engine declares its names with
``api.errors.field_names`` (a dependency); this class applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from api.errors import FIELD_NAMES_SCOPE_KEY, error_response, field_names

__all__ = ["OpenAIRoute", "field_names"]


class OpenAIRoute(APIRoute):
    """An APIRoute whose errors (validation included) are answered in OpenAI's shape, with the route's names."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - every error becomes an answer; bugs are logged
                return error_response(exc, request.url.path, request.scope.get(FIELD_NAMES_SCOPE_KEY),
                                      headers=dict(getattr(exc, "headers", None) or {}) or None)

        return handle
