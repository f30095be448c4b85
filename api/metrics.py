"""Bounded label cardinality for BentoML's request metrics: route templates, never raw paths.

BentoML labels its request counters, histograms and gauges with the raw URL path, so /metrics listed
Gradio's file URLs (from which another user's upload could be fetched) and grew without bound with
every distinct unknown path. :func:`install` makes BentoML's metrics middleware see the route's
template instead (``/ui/gradio_api/file={path_or_url}``, ``/v1/audio/voices/{voice_id}``) and one
label, ``other``, for every path no route knows; the application still sees the real path.
"""

from __future__ import annotations

import functools
from typing import Any

from starlette.routing import Match, Mount

from api.uploads import ASGIApp, Receive, Scope, Send

UNKNOWN = "other"
_REAL_PATH = "editx.real_path"


def _children(route: Any) -> list[Any] | None:
    """The routes inside a FastAPI ``include_router`` branch (with the include prefix applied)."""
    if hasattr(route, "effective_candidates"):
        return [*route.effective_candidates(), *route.effective_low_priority_routes()]
    return None


def _template(routes: list[Any], scope: Scope, prefix: str = "", depth: int = 0) -> str | None:
    for route in routes:
        kids = _children(route)
        if kids is not None:
            found = _template(kids, scope, prefix, depth + 1) if depth < 8 else None
            if found is not None:
                return found
            continue
        try:
            match, child = route.matches(scope)
        except Exception:
            continue
        if match == Match.NONE:
            continue
        if isinstance(route, Mount):
            inner = list(route.routes or [])
            if inner and depth < 8:
                found = _template(inner, {**scope, **child}, prefix + route.path, depth + 1)
                if found is not None:
                    return found
            if not route.path:
                continue  # a catch-all mount that no inner route claimed: unknown
            return prefix + route.path + "/*"
        return prefix + (getattr(route, "path_format", None) or getattr(route, "path", "") or "")
    return None


@functools.lru_cache(maxsize=4096)
def _cached_label(app_id: int, method: str, path: str) -> str:
    app = _APPS.get(app_id)
    if app is None:
        return UNKNOWN
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "query_string": b"", "headers": []}
    return _template(list(app.router.routes), scope) or UNKNOWN


_APPS: dict[int, Any] = {}


def route_label(scope: Scope) -> str:
    """The route template that serves this request, or ``other``; bounded by the routes the app has."""
    app = scope.get("app")
    if app is None or not hasattr(app, "router"):
        return UNKNOWN
    _APPS.setdefault(id(app), app)
    return _cached_label(id(app), scope.get("method", "GET"), scope["path"])


def install() -> None:
    """Swap BentoML's metrics middleware for one that labels by route template (idempotent)."""
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "_editx_templated", False):
        return

    class TemplatedMetricsMiddleware(base):  # type: ignore[misc, valid-type]
        _editx_templated = True

        def __init__(self, app: ASGIApp, **options: Any) -> None:
            async def restore_path(scope: Scope, receive: Receive, send: Send) -> None:
                real = scope.get(_REAL_PATH)
                await app({**scope, "path": real} if real is not None else scope, receive, send)

            super().__init__(restore_path, **options)

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"] == "/metrics":
                await super().__call__(scope, receive, send)
                return
            await super().__call__({**scope, _REAL_PATH: scope["path"], "path": route_label(scope)}, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = TemplatedMetricsMiddleware
