"""EDITX_UPLOAD_IDLE_S: a body that sends nothing for that long is answered 408 and frees its upload slot at once.

The upload middleware is driven directly (no server): each silent client is a ``receive()`` that never
returns, so the only thing that can end it is the idle rule (the whole-body deadline is far away).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from api.errors import BUSY_RETRY_AFTER_S
from api.settings import HttpSettings
from api.uploads import UploadLimitMiddleware

IDLE_S = 0.3
SETTINGS = HttpSettings(max_uploads=2, upload_idle_s=IDLE_S, upload_timeout_s=60)


async def reading_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body (as the body guard does), then answers 200 with its size."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"client left"})
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def scope(path: str = "/clone", length: int = 10) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path,
            "headers": [(b"content-length", str(length).encode()), (b"content-type", b"multipart/form-data")]}


async def call(guard: UploadLimitMiddleware, receive: Any, path: str = "/clone") -> tuple[int, dict, bytes]:
    out: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    await guard(scope(path), receive, send)
    start = next(m for m in out if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


async def silent() -> dict[str, Any]:
    await asyncio.Event().wait()  # the client opened the upload and sends nothing, ever
    raise AssertionError("unreachable")


def whole(body: bytes = b"0123456789") -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def trickle(chunks: int, every_s: float) -> Any:
    """A slow but live client: one byte every ``every_s`` (under the idle limit), ``chunks`` times."""
    left = chunks

    async def receive() -> dict[str, Any]:
        nonlocal left
        await asyncio.sleep(every_s)
        left -= 1
        return {"type": "http.request", "body": b"x", "more_body": left > 0}

    return receive


def test_silent_uploads_free_their_slots_after_the_idle_limit() -> None:
    async def scenario() -> None:
        guard = UploadLimitMiddleware(reading_app, 1 << 20, settings=lambda: SETTINGS)
        start = time.monotonic()
        quiet = [asyncio.create_task(call(guard, silent)) for _ in range(SETTINGS.max_uploads)]
        await asyncio.sleep(0.05)
        assert guard.receiving == SETTINGS.max_uploads
        # Every slot is held by a silent client: one more is refused at once, saying when to retry.
        status, headers, body = await call(guard, whole())
        assert status == 429 and headers["retry-after"] == str(BUSY_RETRY_AFTER_S), body
        answers = await asyncio.gather(*quiet)
        took = time.monotonic() - start
        for status, headers, body in answers:
            err = json.loads(body)
            assert status == 408 and "EDITX_UPLOAD_IDLE_S" in err["error"] and err["field"] == "body", err
            assert headers["connection"] == "close"
        assert IDLE_S <= took < IDLE_S + 2, took  # the idle limit, not the 60 s deadline
        assert guard.receiving == 0
        # The slots are free again: a normal upload goes through.
        status, _, body = await call(guard, whole())
        assert status == 200 and body == b"10"

    asyncio.run(scenario())


def test_a_slow_but_live_upload_is_not_idle() -> None:
    """Each chunk restarts the idle clock: 5 chunks 0.2 s apart take 1 s, longer than the 0.3 s idle limit."""
    async def scenario() -> None:
        guard = UploadLimitMiddleware(reading_app, 1 << 20, settings=lambda: SETTINGS)
        status, _, body = await call(guard, trickle(5, IDLE_S * 2 / 3))
        assert status == 200 and body == b"5"

    asyncio.run(scenario())


def test_the_idle_answer_is_in_the_route_shape() -> None:
    async def scenario() -> None:
        guard = UploadLimitMiddleware(reading_app, 1 << 20, settings=lambda: SETTINGS)
        status, _, body = await call(guard, silent, path="/v1/audio/transcriptions")
        err = json.loads(body)["error"]
        assert status == 408 and err["type"] == "timeout_error" and err["param"] == "body", err

    asyncio.run(scenario())


def test_the_idle_limit_is_read_from_the_environment() -> None:
    assert HttpSettings.from_env({"EDITX_UPLOAD_IDLE_S": "4.5"}).upload_idle_s == 4.5
    assert HttpSettings.from_env({}).upload_idle_s == 15
