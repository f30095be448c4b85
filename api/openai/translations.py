"""POST /v1/audio/translations: OpenAI's translation API (speech in any language → English text).

It runs the service's one Whisper model with Whisper's own translate task, so it needs a
multilingual model: the English-only tiny.en that ships for offline use answers 400 and names
the setting that picks the model. Subtitles and timed segments come from the transcription
route's helpers.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from starlette.responses import Response

from api.openai.backend import BackendProvider, read_audio
from api.openai.errors import OpenAIRoute
from api.openai.protocol import TRANSCRIPTION_MODEL, TranscriptionFormat, TranslationJson, TranslationVerbose
from api.openai.transcriptions import answer, check_model
from api.status import require_ready


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
        check_model(engine, model)
        require_ready(engine)
        clip = read_audio(file, "file", engine.config.max_upload_bytes)
        result = engine.transcribe_detailed(clip, None, field_name="file", initial_prompt=prompt or None,
                                            temperature=temperature, task="translate")
        return answer(result, response_format, verbose=lambda timed: TranslationVerbose(
            duration=timed.duration, text=timed.text, segments=timed.segments), plain=TranslationJson)

    return api
