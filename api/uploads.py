"""Uploads: decoding an uploaded file, and the ASGI middleware that caps request bodies BEFORE they are read.

BentoML and Starlette read a whole multipart body (and BentoML copies each
file into memory) before any API code runs, and Gradio's own limit acts only
after its upload is parsed. This middleware answers 413 from the
Content-Length header without reading anything, and for bodies without one
(chunked) it counts bytes as they stream in and cuts the request off at the
limit, replacing whatever the application would have answered with the 413.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from runners.audio import Audio, AudioDecodeError, decode_audio
from runners.errors import InputTooLargeError, InvalidInputError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("editx.upload")

# Room for multipart framing and the text fields on top of the audio file itself.
FORM_OVERHEAD_BYTES = 1024 * 1024


def read_upload(path: Path | str, field: str, max_bytes: int) -> Audio:
    """Decode an uploaded file; the declared content type is ignored, the bytes are judged."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise InvalidInputError(f"{field} is an empty file (0 bytes)", field=field)
    if size > max_bytes:
        raise InputTooLargeError(
            f"{field} is {size} bytes; the upload limit is {max_bytes} bytes (EDITX_MAX_UPLOAD_BYTES)", field=field
        )
    try:
        return decode_audio(path)
    except AudioDecodeError as exc:
        # libsndfile's reason without the server-side temporary path it quotes.
        reason = getattr(exc.__cause__, "error_string", None) or "no samples"
        raise InvalidInputError(
            f"{field} is not audio that can be decoded ({reason.rstrip('.')}); send WAV, FLAC, OGG or MP3",
            field=field,
        ) from exc


class UploadLimitMiddleware:
    """Reject HTTP request bodies larger than ``max_body_bytes`` with a JSON 413."""

    def __init__(self, app: ASGIApp, max_body_bytes: int | Callable[[], int]) -> None:
        self.app = app
        self._limit = max_body_bytes

    @property
    def max_body_bytes(self) -> int:
        # A callable is asked on every request, so the limit is the running instance's
        # (its configuration is read when it starts, not when this module is imported).
        return int(self._limit()) if callable(self._limit) else self._limit

    def _message(self, size: int | None) -> bytes:
        seen = f"{size} bytes" if size is not None else "more than that"
        text = (
            f"request body too large: {seen}; the limit is {self.max_body_bytes} bytes "
            "(the audio upload limit EDITX_MAX_UPLOAD_BYTES plus 1 MiB for form fields)"
        )
        return json.dumps({"error": text, "field": "body"}).encode()

    async def _send_413(self, send: Send, size: int | None) -> None:
        body = self._message(size)
        log.warning("refused with 413: %s", json.loads(body)["error"], extra={"stage": "request"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                if declared is not None and declared > limit:
                    await self._send_413(send, declared)
                    return
                break

        received = 0
        exceeded = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    # Look like a client that went away: every framework stops reading.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded:
                return  # the app's answer to the cut-off body is replaced by the 413
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not response_started:
            await self._send_413(send, None)
