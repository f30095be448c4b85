"""Running engine calls from async routes: off the event loop, and aborted when the client goes away.

BentoML runs sync APIs one at a time per worker; the engine serves many requests
at once only if they reach it together. So the audio routes are async and each
engine call runs in a worker thread. While it runs, the client's connection is
watched: a client that disconnects sets the call's ``cancel`` event, and the
engine aborts the request in its scheduler within one step.

Streams are driven chunk by chunk from the event loop (each ``next`` in a worker
thread) and closed as soon as the client is gone or the response is cancelled,
which aborts their request too.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Literal, TypeVar

import anyio
import numpy as np
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runners.engine import AudioChunk

log = logging.getLogger("editx.api")

T = TypeVar("T")
StreamFormat = Literal["wav", "pcm"]
STREAM_MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "pcm": "audio/L16;rate=24000;channels=1"}
DISCONNECT_POLL_S = 0.25


async def client_gone(request: Request | None) -> bool:
    """True once the client closed its connection (never blocks)."""
    if request is None:
        return False
    try:
        return await request.is_disconnected()
    except Exception:  # noqa: BLE001 - a receive channel in an odd state: treat as connected
        return False


async def run_cancellable(request: Request | None, call: Callable[[threading.Event], T]) -> T:
    """``call(cancel)`` in a worker thread; ``cancel`` is set when the client disconnects."""
    cancel = threading.Event()
    task = asyncio.ensure_future(anyio.to_thread.run_sync(call, cancel))
    try:
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not done and await client_gone(request):
                log.info("client disconnected: aborting its request", extra={"stage": "request"})
                cancel.set()
        return task.result()
    except asyncio.CancelledError:
        cancel.set()
        raise


def client_gone_response() -> Response:
    """What an aborted request answers; nobody reads it (nginx's 499: the client closed the request)."""
    return Response(status_code=499)


def pcm16(samples: np.ndarray) -> bytes:
    """float32 [-1, 1] → raw 16-bit little-endian PCM."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_stream_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header whose sizes say "unknown" (0xFFFFFFFF): players read until the end."""
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16) +
            b"data" + struct.pack("<I", unknown))


async def audio_chunks(request: Request | None, chunks: Iterator[AudioChunk],
                       on_chunk: Callable[[AudioChunk], None] | None = None) -> AsyncIterator[AudioChunk]:
    """The engine's chunks, fetched one by one off the event loop; the stream is closed when we stop."""
    try:
        while True:
            if await client_gone(request):
                log.info("client disconnected mid-stream: aborting its request", extra={"stage": "request"})
                return
            chunk = await anyio.to_thread.run_sync(next, chunks, None)
            if chunk is None:
                return
            if on_chunk is not None:
                on_chunk(chunk)
            yield chunk
    finally:
        await anyio.to_thread.run_sync(_close, chunks)


def _close(chunks: Iterator[AudioChunk]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def stream_response(request: Request | None, chunks: Iterator[AudioChunk], fmt: StreamFormat,
                    sample_rate: int, headers: dict[str, str] | None = None) -> StreamingResponse:
    """Audio sent as it is made (chunked transfer): ``wav`` with an open-ended header, or raw ``pcm``."""

    async def body() -> AsyncIterator[bytes]:
        if fmt == "wav":
            yield wav_stream_header(sample_rate)
        async for chunk in audio_chunks(request, chunks):
            if chunk.samples.size:
                yield pcm16(chunk.samples)

    return StreamingResponse(body(), media_type=STREAM_MEDIA_TYPES[fmt], headers=headers)
