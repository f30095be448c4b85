"""Admission: a bounded number of work requests in flight; the operator's routes are never refused.

BentoML's ``traffic.max_concurrency`` counts every request, so under load it answered 429 to /status,
/ui/ and /docs.json too, without Retry-After. This middleware counts only work (POST/PUT/PATCH/DELETE
outside the operator's routes): probes, /status, /metrics, /logs, the docs, page loads and Gradio's event
streams always pass. A refusal is ``api.errors.Busy`` (429 with the busy Retry-After). The model's own queue is the scheduler's; the
bodies being received are bounded by the upload middleware.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from api.errors import BUSY_RETRY_AFTER_S, Busy, send_error
from api.settings import HttpSettings
from api.uploads import ASGIApp, Receive, Scope, Send

log = logging.getLogger("editx.admission")

# POSTs that are cheap and operator-facing: never counted, never refused.
OPERATOR_POSTS = frozenset({"/cache/clear", "/login"})
WORK_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_work(scope: Scope) -> bool:
    return scope.get("method") in WORK_METHODS and scope["path"] not in OPERATOR_POSTS


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, settings: Callable[[], HttpSettings]) -> None:
        self.app = app
        self._settings = settings
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_work(scope):
            await self.app(scope, receive, send)
            return
        limit = self._settings().max_requests
        if self.in_flight >= limit:  # one event loop: the check and the increment cannot interleave
            await send_error(send, scope["path"], Busy(
                f"the service is busy ({self.in_flight} requests in flight, the limit is {limit}: "
                f"EDITX_MAX_REQUESTS); retry after {BUSY_RETRY_AFTER_S} s"))
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
