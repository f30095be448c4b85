"""Running engine jobs from async routes: off the event loop, whole or streamed, aborted when the client goes.

BentoML runs sync APIs one at a time per worker; the engine serves many requests at once
only if they reach it together. So the audio routes are async and each engine call runs in
a worker thread. :func:`answer_job` is the one place where a front end's job becomes an
HTTP answer: whole (the job collected while the client's connection is watched: a client
that disconnects sets the job's ``cancel`` event and the engine aborts it within one step)
or streamed (the job's chunks encoded and sent as they are made, pulled one by one in
worker threads; when the client goes away the stream is closed, which aborts the job).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from api.audio_out import (
    MEDIA_TYPES,
    base_headers,
    captioned_body,
    captioned_events,
    check_stream_format,
    encode,
    encoded,
    encoded_with_captions,
    sse_events,
    synthesis_headers,
    whole_response,
)
from api.captions import CaptionFormat
from runners.jobs import Job
from runners.pipeline.chunks import JobStream

if TYPE_CHECKING:
    from runners.engine import EditXEngine

log = logging.getLogger("editx.api")

T = TypeVar("T")
DISCONNECT_POLL_S = 0.25
_END = object()


async def client_gone(request: Request | None) -> bool:
    """True once the client closed its connection (never blocks)."""
    if request is None:
        return False
    try:
        return await request.is_disconnected()
    except Exception:  # noqa: BLE001 - a receive channel in an odd state: treat as connected
        return False


async def run_cancellable(request: Request | None, call: Callable[[threading.Event], T],
                          cancel: threading.Event | None = None) -> T:
    """``call(cancel)`` in a worker thread; ``cancel`` (a new event unless given) is set when the client leaves."""
    cancel = cancel or threading.Event()
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


def _close_when_idle(source: Any) -> None:
    """Close a generator once the step running in a worker thread has returned."""
    while getattr(source, "gi_running", False):
        time.sleep(0.02)
    try:
        source.close()
    except ValueError:  # started again meanwhile (nobody pulls any more): try once more
        _close_when_idle(source)


async def relay(request: Request | None, source: Iterator[bytes], on_stop: Callable[[], None] | None = None,
                first: bytes | None = None) -> AsyncIterator[bytes]:
    """Pull each piece in a worker thread; when we stop (done, client gone, cancelled) close the source.

    ``first`` is a piece already pulled. ``on_stop`` runs first when we stop (it sets the job's cancel
    event: a step that is busy in its thread, such as a whole clone before its edit passes, is
    aborted instead of finished for nobody).
    """
    try:
        if first:
            yield first
        while True:
            # The next piece is made in a worker thread while the connection is watched: a client that
            # leaves while nothing is sent (a long first step) is noticed within DISCONNECT_POLL_S.
            task = asyncio.ensure_future(anyio.to_thread.run_sync(next, source, _END))
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
                if not done and await client_gone(request):
                    log.info("client disconnected mid-stream: aborting its request", extra={"stage": "request"})
                    return
            piece = task.result()
            if piece is _END:
                return
            yield piece  # type: ignore[misc]
    finally:
        if on_stop is not None:
            on_stop()
        if getattr(source, "gi_running", False):  # a step still runs in its thread: close after it
            threading.Thread(target=_close_when_idle, args=(source,), name="editx-close-stream", daemon=True).start()
        else:
            close = getattr(source, "close", None)
            if close is not None:
                close()


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its body when sending stops for any reason.

    Starlette stops iterating when the client goes away but leaves the iterator open; closing it
    is what lets the generation behind it stop.
    """

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()


async def answer_job(request: Request | None, engine: "EditXEngine", job: Job, *, stream: bool, fmt: str,
                     headers: dict[str, str] | None = None, sse: Callable[[int], BaseModel] | None = None,
                     filename: str = "editx", captions: CaptionFormat | None = None) -> Response:
    """Run ``job`` and answer it in ``fmt``: streamed as it is made, or whole with its length.

    ``sse`` (``/v1``'s ``stream_format=sse``) frames the bytes as server-sent events and ends with
    the usage it builds from the codec ids made. ``captions`` (json, srt, vtt) adds where each piece
    is said: whole, a JSON body (:class:`api.captions.CaptionedAudio`) with the audio in base64;
    streamed (or with ``sse``), server-sent events with a caption event as each caption's end is
    known (:func:`api.audio_out.captioned_events`). Errors found before the first byte (checks,
    voice, queue) raise here, so they become real statuses.
    """
    check_stream_format(stream, fmt)
    extra = headers or {}
    if stream:
        cancel = threading.Event()
        chunks: JobStream = await anyio.to_thread.run_sync(lambda: engine.run(job, stream=True, cancel=cancel))
        hdrs = {**base_headers(engine.is_tiny, streamed=True), "X-EditX-Iterations": str(chunks.iterations), **extra}
        if captions is not None:
            def done() -> tuple[int, BaseModel | None]:
                return chunks.tokens, sse(chunks.tokens) if sse is not None else None

            source = captioned_events(encoded_with_captions(chunks, fmt), fmt, chunks.sample_rate, captions, done)
        else:
            body = encoded(chunks, fmt)
            source = sse_events(body, lambda: sse(chunks.tokens)) if sse is not None else body
        media = "text/event-stream" if sse is not None or captions is not None else MEDIA_TYPES[fmt]
        # The first audio is made before the answer starts: what fails before it is a real status.
        try:
            first = await run_cancellable(request, lambda _: next(source, b""), cancel)
        except BaseException:
            cancel.set()
            await anyio.to_thread.run_sync(_close_when_idle, source)
            raise
        return ClosingStreamingResponse(relay(request, source, cancel.set, first), media_type=media, headers=hdrs)
    syn = await run_cancellable(request, lambda cancel: engine.run(job, cancel=cancel).collect())
    hdrs = {**synthesis_headers(syn, engine.is_tiny), **extra}
    if captions is not None and sse is not None:
        whole = iter([(encode(syn.samples, syn.sample_rate, fmt), tuple(syn.captions), int(syn.samples.size))])
        events = captioned_events(whole, fmt, syn.sample_rate, captions,
                                  lambda: (syn.generated_tokens, sse(syn.generated_tokens)))
        return StreamingResponse(events, media_type="text/event-stream", headers=hdrs)
    if captions is not None:
        return JSONResponse(captioned_body(syn, fmt, captions).model_dump(mode="json"), headers=hdrs)
    if sse is not None:
        events = sse_events(iter([encode(syn.samples, syn.sample_rate, fmt)]), lambda: sse(syn.generated_tokens))
        return StreamingResponse(events, media_type="text/event-stream", headers=hdrs)
    return whole_response(syn, fmt, hdrs, filename)
