"""POST /v1/audio/transcriptions: OpenAI's transcription API over the service's faster-whisper model."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel
from starlette.responses import JSONResponse, PlainTextResponse, Response

from api.openai.backend import BackendProvider, read_audio
from api.openai.errors import OpenAIRoute
from api.openai.protocol import (
    TRANSCRIPTION_MODEL,
    TranscriptionFormat,
    TranscriptionJson,
    TranscriptionSegment,
    TranscriptionVerbose,
    TranscriptionWord,
)
from api.status import require_ready
from runners.errors import InvalidInputError
from runners.transcriber import DetailedTranscription, Segment

if TYPE_CHECKING:
    from runners.engine import EditXEngine

_GRANULARITIES = ("segment", "word")


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(segments: list[Segment]) -> str:
    blocks = [f"{i}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{s.text}\n"
              for i, s in enumerate(segments, start=1)]
    return "\n".join(blocks)


def to_vtt(segments: list[Segment]) -> str:
    blocks = [f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{s.text}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_verbose(result: DetailedTranscription, words: bool) -> TranscriptionVerbose:
    segments = [
        TranscriptionSegment(id=k, seek=0, start=s.start, end=s.end, text=s.text, tokens=s.tokens,
                             temperature=s.temperature, avg_logprob=s.avg_logprob,
                             compression_ratio=s.compression_ratio, no_speech_prob=s.no_speech_prob)
        for k, s in enumerate(result.segments)
    ]
    out = TranscriptionVerbose(language=result.language or "", duration=round(result.duration_s, 3),
                               text=result.text, segments=segments)
    if words:
        out.words = [TranscriptionWord(word=w.word, start=w.start, end=w.end)
                     for s in result.segments for w in (s.words or [])]
    return out


def check_model(engine: "EditXEngine", model: str) -> None:
    """The Whisper routes answer for ``whisper-1`` (OpenAI's name) or the served model's own name."""
    if model not in (TRANSCRIPTION_MODEL, "whisper", engine.transcriber.config.model):
        raise InvalidInputError(f"unknown model {model!r}; use {TRANSCRIPTION_MODEL}", field="model")


def answer(result: DetailedTranscription, response_format: str, words: bool = False,
           verbose: Callable[[TranscriptionVerbose], BaseModel] | None = None,
           plain: Callable[[str], BaseModel] = TranscriptionJson) -> Response:
    """A transcript in the asked format: text, subtitles (srt, vtt), timed segments or the text alone.

    ``verbose`` and ``plain`` let the translation route give its own models for the JSON shapes.
    """
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format == "srt":
        return PlainTextResponse(to_srt(result.segments), media_type="application/x-subrip")
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(result.segments), media_type="text/vtt")
    if response_format == "verbose_json":
        timed = to_verbose(result, words)
        return JSONResponse((verbose(timed) if verbose else timed).model_dump(exclude_none=True))
    return JSONResponse(plain(text=result.text).model_dump())  # type: ignore[call-arg]


def router(backend: BackendProvider) -> APIRouter:
    api = APIRouter(route_class=OpenAIRoute, tags=["OpenAI-compatible"])

    @api.post(
        "/v1/audio/transcriptions",
        response_model=TranscriptionVerbose | TranscriptionJson,
        responses={200: {"content": {"application/json": {}, "text/plain": {}}}},
    )
    def create_transcription(
        file: Annotated[UploadFile | None, File(description="speech: WAV/FLAC/OGG/MP3, 0.1–30 s")] = None,
        model: Annotated[str, Form(description=f"{TRANSCRIPTION_MODEL} (or the served Whisper model's name)")] =
        TRANSCRIPTION_MODEL,
        language: Annotated[str, Form(description="language code such as 'en'; empty = detect")] = "",
        prompt: Annotated[str, Form(description="text that came before: names, spellings, style")] = "",
        temperature: Annotated[float | None, Form(description="0–1; unset = Whisper's fallback schedule")] = None,
        response_format: Annotated[TranscriptionFormat, Form(description="json, text, srt, vtt or verbose_json")] =
        "json",
        timestamp_granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
    ) -> Response:
        """What is said in ``file``, as text, subtitles or timed segments and words."""
        engine = backend().engine
        check_model(engine, model)
        wanted = set(timestamp_granularities or [])
        if wanted - set(_GRANULARITIES):
            raise InvalidInputError(f"timestamp_granularities takes {', '.join(_GRANULARITIES)} "
                                    f"(got {', '.join(sorted(wanted))})", field="timestamp_granularities")
        words = "word" in wanted
        if wanted and response_format != "verbose_json":
            raise InvalidInputError("timestamp_granularities needs response_format=verbose_json",
                                    field="timestamp_granularities")
        require_ready(engine)
        clip = read_audio(file, "file", engine.config.max_upload_bytes)
        result = engine.transcribe_detailed(clip, language or None, field_name="file", initial_prompt=prompt or None,
                                            temperature=temperature, word_timestamps=words)
        return answer(result, response_format, words)

    return api
