"""Uploads: decoding an uploaded file, and the ASGI middleware that guards request bodies BEFORE they are read.

BentoML and Starlette read a whole multipart body (and BentoML copies each
file into memory) before any API code runs, and Gradio's own limit acts only
after its upload is parsed. The middleware

- answers 413 from the Content-Length header without reading anything, and for
  bodies without one (chunked) counts bytes as they stream in and cuts the
  request off at the limit;
- gives every body a deadline (EDITX_UPLOAD_TIMEOUT_S): a client that has not
  sent it all by then gets a 408, so a trickling client holds nothing for long;
- and a minimum rate (EDITX_UPLOAD_IDLE_S, in the spirit of Apache's mod_reqtimeout):
  a body that sends nothing for that long gets a 408 at once and frees its slot,
  so silent connections cannot hold every upload slot until the deadline;
- bounds the bodies being received at once (EDITX_MAX_UPLOADS), apart from the
  model's queue: one more answers 429 at once instead of waiting.

A cut-off body looks to the application like a client that went away, and
whatever it would answer is replaced by the 413/408.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from api.errors import BodyTimeout, BodyTooLarge, Busy, send_error
from api.settings import HttpSettings
from runners.audio import DEFAULT_MAX_DECODE_S, Audio, AudioDecodeError, AudioTooLongError, decode_audio
from runners.errors import InputTooLargeError, InvalidInputError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("editx.upload")

# Room for multipart framing and the text fields on top of the audio file itself.
FORM_OVERHEAD_BYTES = 1024 * 1024


def read_upload(path: Path | str, field: str, max_bytes: int, max_seconds: float = DEFAULT_MAX_DECODE_S) -> Audio:
    """Decode an uploaded file; the declared content type is ignored, the bytes are judged."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise InvalidInputError(f"{field} is an empty file (0 bytes)", field=field)
    if size > max_bytes:
        raise InputTooLargeError(
            f"{field} is {size} bytes; the upload limit is {max_bytes} bytes (EDITX_MAX_UPLOAD_BYTES)", field=field
        )
    return decode_field(path, field, max_seconds)


# What decode_audio reads, in the words a client knows its files by.
ACCEPTED_FORMATS = "WAV, FLAC, OGG/Opus, MP3, WebM, M4A/MP4 or AAC"


def decode_field(source: Path | bytes, field: str, max_seconds: float = DEFAULT_MAX_DECODE_S) -> Audio:
    """Decode a file or its bytes; what cannot be decoded is a 4xx naming ``field``, the reason and what is accepted.

    The reason is the decoder's own short one: never the server-side temporary path.
    """
    try:
        return decode_audio(source, max_seconds)
    except AudioTooLongError as exc:
        raise AudioTooLongError(f"{field} is too long: {exc.reason}", field=field, reason=exc.reason) from exc
    except AudioDecodeError as exc:
        reason = exc.reason.rstrip(".")
        raise AudioDecodeError(
            f"{field} is not audio that can be decoded ({reason}); send {ACCEPTED_FORMATS}", field=field, reason=reason
        ) from exc


class UploadLimitMiddleware:
    """Body cap (413), body deadline (408) and a bound on bodies received at once (429)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int | Callable[[], int],
                 settings: Callable[[], HttpSettings] | None = None) -> None:
        self.app = app
        self._limit = max_body_bytes
        self._settings = settings or HttpSettings
        self.receiving = 0  # bodies being received now

    @property
    def max_body_bytes(self) -> int:
        # A callable is asked on every request, so the limit is the running instance's
        # (its configuration is read when it starts, not when this module is imported).
        return int(self._limit()) if callable(self._limit) else self._limit

    def _too_large(self, size: int | None) -> str:
        seen = f"{size} bytes" if size is not None else "more than that"
        return (
            f"request body too large: {seen}; the limit is {self.max_body_bytes} bytes "
            "(the audio upload limit EDITX_MAX_UPLOAD_BYTES plus 1 MiB for form fields)"
        )

    async def _refuse(self, send: Send, path: str, refusal: Exception) -> None:
        await send_error(send, path, refusal, close=True, level=logging.WARNING)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared: int | None = None
        chunked = False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        path = scope["path"]
        if declared is not None and declared > limit:
            await self._refuse(send, path, BodyTooLarge(self._too_large(declared), "body"))
            return
        has_body = chunked or bool(declared)
        settings = self._settings()
        if has_body and self.receiving >= settings.max_uploads:
            message = (f"too many uploads in progress ({self.receiving}, the limit is {settings.max_uploads}: "
                       "EDITX_MAX_UPLOADS); retry in a moment")
            await send_error(send, path, Busy(message, "body"), close=True)
            return

        deadline = time.monotonic() + settings.upload_timeout_s
        received = 0
        cut: str | None = None  # "size", "deadline" or "idle" once the body was cut off
        body_done = not has_body
        slot = False
        response_started = False

        def release() -> None:
            nonlocal slot
            if slot:
                slot = False
                self.receiving -= 1

        async def guarded_receive() -> Message:
            nonlocal received, cut, body_done
            if cut is not None:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()  # after the body: only the disconnect is left to wait for
            left = deadline - time.monotonic()
            try:
                # Each wait is bounded by the idle limit too: every chunk that arrives starts it again.
                message = await asyncio.wait_for(receive(), max(0.0, min(left, settings.upload_idle_s)))
            except TimeoutError:
                cut = "idle" if settings.upload_idle_s < left else "deadline"
                release()
                return {"type": "http.disconnect"}  # every framework stops reading
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = "size"
                    release()
                    return {"type": "http.disconnect"}
                if not message.get("more_body", False):
                    body_done = True
                    release()
            else:
                release()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if cut is not None:
                return  # the app's answer to the cut-off body is replaced by the 413/408
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        if has_body:
            slot = True
            self.receiving += 1
        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if cut is None:
                raise
        finally:
            release()
        if cut is not None and not response_started:
            if cut == "deadline":
                refusal: Exception = BodyTimeout(f"the request body did not arrive within "
                                                 f"{settings.upload_timeout_s:g} s (EDITX_UPLOAD_TIMEOUT_S)", "body")
            elif cut == "idle":
                refusal = BodyTimeout(f"the request body sent nothing for {settings.upload_idle_s:g} s "
                                      "(EDITX_UPLOAD_IDLE_S)", "body")
            else:
                refusal = BodyTooLarge(self._too_large(None), "body")
            await self._refuse(send, path, refusal)
