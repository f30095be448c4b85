"""POST /v1/audio/speech: clone a registered voice, optionally edit it, and send the audio as it is encoded.

* ``stream_format=audio`` (default): the encoded bytes are sent as they are made; with
  ``sse``, each piece travels base64-encoded in a ``speech.audio.delta`` event and a final
  ``speech.audio.done`` event carries the usage.
* Without ``instructions`` and with an engine that streams (``engine.clone_stream``), the
  first bytes leave while the rest is still being generated. Edit passes need the whole
  clone first, so an edited answer is streamed once it is finished, through the same path.
* Errors found before the first byte (bad voice, text, instructions, a full queue) are
  answered with their status; the first chunk is produced before the response starts.
"""

from __future__ import annotations

import base64
import inspect
import itertools
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import numpy as np
import torch
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from api.engine_calls import run_cancellable
from api.openai.backend import BackendProvider
from api.openai.errors import OpenAIRoute, field_names
from api.openai.protocol import EditPass, SpeechRequest, SpeechUsage
from api.responses import synthesis_headers
from api.status import require_ready
from runners.audio import DECODER_RATE, Audio
from runners.audio_encoders import MEDIA_TYPES, AudioEncoder, encode, split
from runners.errors import InvalidInputError
from runners.tokens import TOKENS_PER_SECOND

log = logging.getLogger("editx.api.openai")

# The engine's names for what this request calls input and voice (errors name the request's field).
SPEECH_FIELDS = field_names(target_text="input", audio_text="input", prompt_audio="voice", prompt_text="voice")
STREAM_PIECE_S = 0.5  # a finished answer is encoded and sent in pieces of this length
_END = object()


def supports(fn: Callable[..., Any], parameter: str) -> bool:
    """Whether ``fn`` takes ``parameter`` (the engine grows ``speed`` and streaming during this work)."""
    try:
        return parameter in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class _Result:
    """What a speech request produced: audio pieces (lazy when streamed) and what is known up front."""

    def __init__(self, pieces: Iterator[np.ndarray], headers: dict[str, str], finished: np.ndarray | None,
                 tokens: list[int]) -> None:
        self.pieces = pieces
        self.headers = headers
        self.finished = finished  # the whole waveform when it was made before answering
        self._tokens = tokens  # [count]: a streamed answer's pieces update it as they are made

    @property
    def tokens(self) -> int:
        return self._tokens[0]


def _synthesize(engine: Any, request: SpeechRequest, args: dict[str, Any], passes: list[EditPass],
                cancel: threading.Event | None = None) -> _Result:
    """Run the clone (streamed when possible) and the edit passes; ``cancel`` aborts them."""
    if not passes and hasattr(engine, "clone_stream"):
        if cancel is not None and supports(engine.clone_stream, "cancel"):
            args = {**args, "cancel": cancel}
        stream = engine.clone_stream(**args)
        first = next(stream, None)  # errors before the first chunk become statuses
        if first is None:
            raise InvalidInputError("the model produced no audio; try another seed or text", field="seed")
        speed = float(args.get("speed", 1.0))
        tokens = [0]

        def pieces() -> Iterator[np.ndarray]:
            made = 0
            try:
                for chunk in itertools.chain([first], stream):
                    samples = np.asarray(chunk.samples, dtype=np.float32).reshape(-1)
                    made += samples.size
                    # audio tokens map to a fixed duration each: count them from what was decoded
                    tokens[0] = round(made / DECODER_RATE * speed * TOKENS_PER_SECOND)
                    yield samples
            finally:
                stream.close()  # a client that went away aborts the generation

        return _Result(pieces(), {"X-EditX-Sample-Rate": str(DECODER_RATE), "X-EditX-Streamed": "true"}, None,
                       tokens)

    cancelling = {"cancel": cancel} if cancel is not None and supports(engine.clone, "cancel") else {}
    syn = engine.clone(**args, **cancelling)
    total = {"tokens": syn.generated_tokens, "iterations": 1}
    timings = dict(syn.timings)
    for k, edit in enumerate(passes):
        seed = None if request.seed is None else request.seed + 1 + k
        audio = Audio(torch.from_numpy(np.ascontiguousarray(syn.samples)), syn.sample_rate)
        editing = {"cancel": cancel} if cancel is not None and supports(engine.edit, "cancel") else {}
        syn = engine.edit(audio, request.input, edit.edit_type, edit.edit_info, seed=seed, **editing)
        total["tokens"] += syn.generated_tokens
        total["iterations"] += 1
        for stage, seconds in syn.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    syn.generated_tokens, syn.iterations, syn.timings = total["tokens"], total["iterations"], timings
    headers = synthesis_headers(syn, engine)
    headers["X-EditX-Streamed"] = "false"
    return _Result(split(syn.samples, syn.sample_rate, STREAM_PIECE_S), headers, syn.samples, [syn.generated_tokens])


def _encoded(result: _Result, fmt: str) -> Iterator[bytes]:
    """The answer's bytes, piece by piece, from one incremental encoder."""
    if result.finished is not None and fmt == "flac":
        # A whole flac is written with its length in the header (a streamed one cannot go back for it).
        body = encode(result.finished, DECODER_RATE, fmt)
        for start in range(0, len(body), 64 * 1024):
            yield body[start:start + 64 * 1024]
        return
    known = None if result.finished is None else int(result.finished.size)
    yield from AudioEncoder(fmt, DECODER_RATE, known_length=known).stream(result.pieces)


def _sse(pieces: Iterator[bytes], usage: Callable[[], SpeechUsage]) -> Iterator[bytes]:
    for piece in pieces:
        event = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
        yield f"data: {json.dumps(event)}\n\n".encode()
    done = {"type": "speech.audio.done", "usage": usage().model_dump()}
    yield f"data: {json.dumps(done)}\n\n".encode()


def _close_when_idle(pieces: Any) -> None:
    """Close a generator once the step running in a worker thread has returned."""
    while getattr(pieces, "gi_running", False):
        time.sleep(0.02)
    try:
        pieces.close()
    except ValueError:  # started again meanwhile (cannot happen: nobody pulls any more); try once more
        _close_when_idle(pieces)


async def _relay(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Pull each piece in a worker thread; when the client goes away, close the source (aborting it)."""
    try:
        while True:
            piece = await run_in_threadpool(next, pieces, _END)
            if piece is _END:
                return
            yield piece  # type: ignore[misc]
    finally:
        if getattr(pieces, "gi_running", False):  # a step is still running in its thread: close after it
            threading.Thread(target=_close_when_idle, args=(pieces,), name="editx-close-stream", daemon=True).start()
        elif hasattr(pieces, "close"):
            pieces.close()  # type: ignore[attr-defined]


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


def router(backend: BackendProvider) -> APIRouter:
    api = APIRouter(route_class=OpenAIRoute, tags=["OpenAI-compatible"])

    @api.post(
        "/v1/audio/speech",
        dependencies=[SPEECH_FIELDS],
        response_class=Response,
        responses={200: {"content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))} | {"text/event-stream": {}}}},
    )
    async def create_speech(request: SpeechRequest, http: Request) -> Response:
        """Speak ``input`` in a registered voice; ``instructions`` add edit passes (emotion, style, speed)."""
        svc = backend()
        engine = svc.engine
        require_ready(engine)
        passes = request.edit_passes()
        # Async with the work in worker threads: concurrent requests reach the scheduler together, and a
        # client that goes away while the answer is made (before any byte is sent) cancels it.
        stored = await anyio.to_thread.run_sync(svc.voices.load, request.voice)
        primed = await anyio.to_thread.run_sync(svc.voices.prime, stored, engine)
        with_speed = supports(engine.clone, "speed")
        args = request.to_clone_args(stored, with_speed=with_speed)
        result = await run_cancellable(http, lambda cancel: _synthesize(engine, request, args, passes, cancel))
        applied = ", ".join(p.label() for p in passes)
        speed_note = f"{request.speed:g}" if with_speed or request.speed == 1.0 else "1 (speed is not supported yet)"
        if not with_speed and request.speed != 1.0:
            log.warning("speed=%g requested but the engine has no speed control yet; answering at speed 1",
                        request.speed)
        log.info("speech: voice %s, %s, instructions [%s], speed %s, streamed %s%s", request.voice,
                 request.response_format, applied or "none", speed_note, result.headers["X-EditX-Streamed"],
                 ", features from the voice registry" if primed else "", extra={"stage": "request"})
        headers = {
            **result.headers,
            "X-EditX-Model": request.model,
            "X-EditX-Voice": request.voice,
            "X-EditX-Instructions": applied,
            "X-EditX-Edit-Passes": str(len(passes)),
            "X-EditX-Speed": f"{request.speed:g}" if with_speed else "1",
            "X-EditX-Speed-Applied": "true" if with_speed else ("false" if request.speed != 1.0 else "true"),
        }
        body = _encoded(result, request.response_format)
        if request.stream_format == "sse":
            def usage() -> SpeechUsage:
                return SpeechUsage(input_tokens=len(request.input), output_tokens=result.tokens,
                                   total_tokens=len(request.input) + result.tokens)

            return ClosingStreamingResponse(_relay(_sse(body, usage)), media_type="text/event-stream", headers=headers)
        headers["Content-Disposition"] = f'attachment; filename="speech.{request.response_format}"'
        return ClosingStreamingResponse(_relay(body), media_type=MEDIA_TYPES[request.response_format], headers=headers)

    return api
