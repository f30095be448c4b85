"""POST /v1/audio/speech: a clone in a registered voice, edit passes from ``instructions``, the audio as made.

The request becomes one engine job (:meth:`SpeechRequest.to_job`) answered by the one path
(:func:`api.engine_calls.answer_job`): every format but flac is streamed as it is encoded
(``stream_format=sse`` frames it as ``speech.audio.delta`` events and a final
``speech.audio.done`` with the usage); flac is sent whole, with its length in the header. Edit
passes need the whole clone first, so with ``instructions`` the last pass is what streams.
Errors found before the first byte (voice, text, instructions, a full queue) are answered with
their status. ``captions`` (ours) answers a JSON body with the audio in base64 and the captions, or
with ``stream_format=sse`` adds ``speech.caption`` events and every caption to the done event.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.audio_out import MEDIA_TYPES, STREAMABLE
from api.captions import CaptionedAudio
from api.engine_calls import answer_job
from api.openai.backend import BackendProvider
from api.openai.errors import OpenAIRoute, field_names
from api.openai.protocol import SpeechRequest, SpeechUsage
from api.status import require_ready

log = logging.getLogger("editx.api.openai")

# The engine's names for what this request calls input and voice (errors name the request's field).
SPEECH_FIELDS = field_names(target_text="input", audio_text="input", prompt_audio="voice", prompt_text="voice")


def router(backend: BackendProvider) -> APIRouter:
    api = APIRouter(route_class=OpenAIRoute, tags=["OpenAI-compatible"])

    @api.post(
        "/v1/audio/speech",
        dependencies=[SPEECH_FIELDS],
        response_class=Response,
        responses={200: {"model": CaptionedAudio,  # the JSON answer of a request with captions
                         "content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))} | {"text/event-stream": {}}}},
    )
    async def create_speech(request: SpeechRequest, http: Request) -> Response:
        """Speak ``input`` in a registered voice; ``instructions`` add edit passes (emotion, style, speed)."""
        engine = backend().engine
        require_ready(engine)
        job = request.to_job()
        applied = ", ".join(p.label() for p in job.edits)
        headers = {"X-EditX-Model": request.model, "X-EditX-Voice": request.voice,
                   "X-EditX-Instructions": applied, "X-EditX-Edit-Passes": str(len(job.edits)),
                   "X-EditX-Speed": f"{request.speed:g}"}

        def usage(tokens: int) -> SpeechUsage:
            return SpeechUsage(input_tokens=len(request.input), output_tokens=tokens,
                               total_tokens=len(request.input) + tokens)

        log.info("speech: voice %s, %s, instructions [%s], speed %g", request.voice, request.response_format,
                 applied or "none", request.speed, extra={"stage": "request"})
        streamable = request.response_format in STREAMABLE
        # Captions need a body that can carry them: events (sse) as made, or one JSON answer (audio).
        stream = streamable and (request.captions is None or request.stream_format == "sse")
        return await answer_job(http, engine, job, stream=stream, fmt=request.response_format, headers=headers,
                                sse=usage if request.stream_format == "sse" else None, filename="speech",
                                captions=request.captions)

    return api
