"""POST /v1/audio/translations: OpenAI's translation API (speech in any language → English text).

It runs the service's one Whisper model with Whisper's own translate task, so it needs a
multilingual model: the English-only tiny.en that ships for offline use answers 400 and names
the setting that picks the model. Subtitles and timed segments come from the transcription
route's helpers.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from starlette.responses import JSONResponse, PlainTextResponse, Response

from api.openai.backend import BackendProvider, read_audio
from api.openai.errors import OpenAIRoute
from api.openai.protocol import TRANSCRIPTION_MODEL, TranscriptionFormat, TranslationJson, TranslationVerbose
from api.openai.transcriptions import to_srt, to_verbose, to_vtt
from api.status import require_ready
from runners.errors import InvalidInputError


def router(backend: BackendProvider) -> APIRouter:
    api = APIRouter(route_class=OpenAIRoute, tags=["OpenAI-compatible"])

    @api.post(
        "/v1/audio/translations",
        response_model=TranslationVerbose | TranslationJson,
        responses={200: {"content": {"application/json": {}, "text/plain": {}}}},
    )
    def create_translation(
        file: Annotated[UploadFile | None, File(description="speech in any language: WAV/FLAC/OGG/MP3, 0.1–30 s")]
        = None,
        model: Annotated[str, Form(description=f"{TRANSCRIPTION_MODEL} (or the served Whisper model's name)")] =
        TRANSCRIPTION_MODEL,
        prompt: Annotated[str, Form(description="English text that came before: names, spellings, style")] = "",
        temperature: Annotated[float | None, Form(description="0–1; unset = Whisper's fallback schedule")] = None,
        response_format: Annotated[TranscriptionFormat, Form(description="json, text, srt, vtt or verbose_json")] =
        "json",
    ) -> Response:
        """What is said in ``file``, in English, as text, subtitles or timed segments."""
        engine = backend().engine
        served = engine.transcriber.config.model
        if model not in (TRANSCRIPTION_MODEL, "whisper", served):
            raise InvalidInputError(f"unknown model {model!r}; use {TRANSCRIPTION_MODEL}", field="model")
        require_ready(engine)
        clip = engine.check_audio(read_audio(file, "file", engine.config.max_upload_bytes), "file")
        result = engine.transcriber.transcribe_detailed(
            clip, None, initial_prompt=prompt or None, temperature=temperature, task="translate",
        )
        if response_format == "text":
            return PlainTextResponse(result.text + "\n")
        if response_format == "srt":
            return PlainTextResponse(to_srt(result.segments), media_type="application/x-subrip")
        if response_format == "vtt":
            return PlainTextResponse(to_vtt(result.segments), media_type="text/vtt")
        if response_format == "verbose_json":
            timed = to_verbose(result, words=False)
            verbose = TranslationVerbose(duration=timed.duration, text=timed.text, segments=timed.segments)
            return JSONResponse(verbose.model_dump())
        return JSONResponse(TranslationJson(text=result.text).model_dump())

    return api
