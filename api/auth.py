"""API keys: one ASGI middleware in front of every route (the APIs, /v1, the native routes, the UI, Gradio's
upload and file routes), so a route added later is covered without anyone remembering to.

Clients send ``Authorization: Bearer <key>`` (what the ``openai`` client does with ``api_key``). A browser
gets a small login page once; it sets an HttpOnly, SameSite=Strict cookie that holds an HMAC of the key,
never the key. Keys are compared in constant time. The probes stay open; /metrics too with
EDITX_METRICS_PUBLIC=1.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from api.errors import BodyTooLarge, Unauthorized, send_error
from api.settings import PROBE_PATHS, HttpSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("editx.auth")

COOKIE = "editx_session"
LOGIN_PATH = "/login"
_LOGIN_BODY_MAX = 8 * 1024


def session_token(key: str) -> str:
    """What the UI cookie holds: stable across replicas and restarts, revoked with the key, not the key."""
    return hmac.new(key.encode(), b"editx-ui-session", hashlib.sha256).hexdigest()


def _matches(candidate: str, secrets: tuple[str, ...]) -> bool:
    # Every secret is compared (no early exit), each in constant time.
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(candidate.encode(), secret.encode())
    return found


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _safe_next(target: str | None) -> str:
    """Only a path on this server (never //host or a scheme: no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target


def login_page(next_path: str, message: str = "") -> bytes:
    note = f'<p style="color:#b00">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>editx-serve: sign in</title></head>
<body style="font-family:sans-serif;max-width:28em;margin:4em auto">
<h1>editx-serve</h1><p>This service needs an API key.</p>{note}
<form method="post" action="{LOGIN_PATH}">
<input type="hidden" name="next" value="{html.escape(next_path)}">
<label>API key <input type="password" name="key" autocomplete="current-password" autofocus required></label>
<button type="submit">Sign in</button></form></body></html>""".encode()


class AuthMiddleware:
    """401 (``WWW-Authenticate: Bearer``) for every request without a valid key, when keys are configured."""

    def __init__(self, app: ASGIApp, settings: Callable[[], HttpSettings]) -> None:
        self.app = app
        self._settings = settings
        self._cached: tuple[HttpSettings, tuple[str, ...], tuple[str, ...]] | None = None

    def _secrets(self) -> tuple[HttpSettings, tuple[str, ...], tuple[str, ...]]:
        settings = self._settings()
        if self._cached is None or self._cached[0] is not settings:
            keys = settings.keys()
            self._cached = (settings, keys, tuple(session_token(k) for k in keys))
        return self._cached

    def _open(self, path: str, settings: HttpSettings) -> bool:
        return path in PROBE_PATHS or (path == "/metrics" and settings.metrics_public)

    def _authorized(self, scope: Scope, keys: tuple[str, ...], tokens: tuple[str, ...]) -> bool:
        auth = _header(scope, b"authorization")
        if auth:
            scheme, _, credential = auth.partition(" ")
            if scheme.lower() == "bearer" and _matches(credential.strip(), keys):
                return True
        cookie = _header(scope, b"cookie")
        if cookie:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(cookie)
            except Exception:  # a malformed cookie header is simply no session
                return False
            if COOKIE in jar and _matches(jar[COOKIE].value, tokens):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        settings, keys, tokens = self._secrets()
        path = scope["path"]
        if not keys or self._open(path, settings):
            await self.app(scope, receive, send)
            return
        if path == LOGIN_PATH and scope["type"] == "http":
            await self._login(scope, receive, send, keys)
            return
        if self._authorized(scope, keys, tokens):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope.get("method") in ("GET", "HEAD") and "text/html" in (_header(scope, b"accept") or ""):
            log.info("refused with 401: no valid API key for %s %s", scope.get("method"), path)
            query = scope.get("query_string", b"").decode("latin-1")
            await _html(send, 401, login_page(path + (f"?{query}" if query else "")))
            return
        await send_error(send, path, Unauthorized("this service needs an API key: send 'Authorization: Bearer <key>'",
                                                  "authorization"), {"WWW-Authenticate": 'Bearer realm="editx"'})

    async def _login(self, scope: Scope, receive: Receive, send: Send, keys: tuple[str, ...]) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope.get("method") != "POST":
            await _html(send, 200, login_page(_safe_next(query.get("next", [""])[0])))
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > _LOGIN_BODY_MAX:
                await send_error(send, LOGIN_PATH, BodyTooLarge("login form too large", "body"))
                return
            if not message.get("more_body"):
                break
        form = parse_qs(body.decode("utf-8", "replace"))
        key, target = form.get("key", [""])[0], _safe_next(form.get("next", [""])[0])
        if not _matches(key, keys):
            log.info("refused with 401: wrong API key on the login page")
            await _html(send, 401, login_page(target, "That key is not valid."))
            return
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = f"{COOKIE}={session_token(key)}; Path=/; HttpOnly; SameSite=Strict{secure}"
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", target.encode()), (b"set-cookie", cookie.encode()),
                                (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


async def _html(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="editx"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

