"""Request and response models of the OpenAI-compatible routes (/v1/...).

They follow OpenAI's audio API field by field, so its clients work unchanged; what we add
(``seed``, edit passes through ``instructions``) is optional. A request converts itself into
engine arguments (:meth:`SpeechRequest.to_clone_args`); the routes stay thin.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.audio_out import AudioFormat
from api.captions import CaptionFormat
from runners.jobs import CloneJob, parse_instructions
from runners.voices import Voice

SPEECH_MODEL = "step-audio-editx"
# OpenAI's TTS model names, accepted so that clients configured for OpenAI work unchanged.
SPEECH_MODEL_ALIASES: tuple[str, ...] = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
TRANSCRIPTION_MODEL = "whisper-1"
OWNED_BY = "stepfun"
CREATED = int(time.time())  # when this process started serving the models


# ---------------------------------------------------------------- models
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = CREATED
    owned_by: str = OWNED_BY
    root: str | None = Field(None, description="what actually serves this id (e.g. the Whisper model folder)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---------------------------------------------------------------- voices
class VoiceObject(Voice):
    """A registered voice, with the ``type`` OpenAI's voice objects carry."""

    type: Literal["audio_sample"] = "audio_sample"


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceObject]
    has_more: bool = False


class VoiceDeleted(BaseModel):
    id: str
    object: Literal["audio.voice.deleted"] = "audio.voice.deleted"
    deleted: bool = True


# ---------------------------------------------------------------- speech
class SpeechRequest(BaseModel):
    """POST /v1/audio/speech, as OpenAI defines it, plus an optional ``seed`` and ``captions``."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(SPEECH_MODEL, description=f"{SPEECH_MODEL} (aliases: {', '.join(SPEECH_MODEL_ALIASES)})")
    input: str = Field(description="the text to speak; it may start with a language tag ([Japanese], [Korean], "
                                   "[Cantonese], [Sichuanese]) and carry sound tags and pinyin+tone "
                                   "pronunciation marks (see GET /vocabulary)")
    voice: str = Field(description="id of a voice registered with POST /v1/audio/voices")
    response_format: AudioFormat = Field("mp3", description="mp3, opus, aac, flac, wav or pcm (s16le mono 24 kHz)")
    speed: float = Field(1.0, description="0.25–4.0; time-scales the speech, pitch unchanged",
                         json_schema_extra={"minimum": 0.25, "maximum": 4.0})
    instructions: str | None = Field(
        None, description="edit passes after the clone: comma-separated values from GET /vocabulary, e.g. "
                          "'happy' or 'whisper, slower'; 'emotion:remove' / 'style:remove' where a value is shared")
    stream_format: Literal["audio", "sse"] = Field("audio", description="audio: bytes as they are made; sse: events")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="fixes sampling (not in OpenAI's API)")
    captions: CaptionFormat | None = Field(
        None, description="not in OpenAI's API: also return captions, json (a list), srt or vtt. With "
                          "stream_format=audio the answer is a JSON body (the audio base64-encoded beside the "
                          "captions); with stream_format=sse the events speech.audio.delta, speech.caption (one "
                          "per caption, as its end is known) and speech.audio.done (every caption)")

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_id(cls, value: Any) -> Any:
        """OpenAI's clients send a custom voice as ``{"id": ...}``."""
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            return value["id"]
        return value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in (SPEECH_MODEL, *SPEECH_MODEL_ALIASES):
            raise ValueError(f"unknown model {value!r}; use {SPEECH_MODEL} (or {', '.join(SPEECH_MODEL_ALIASES)})")
        return value

    @field_validator("input")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input is empty")
        return value

    def to_job(self) -> CloneJob:
        """The engine job: a clone in the registered voice, then the instructions' edit passes."""
        return CloneJob(self.input, voice=self.voice, seed=self.seed, speed=self.speed,
                        edits=parse_instructions(self.instructions))


class SpeechUsage(BaseModel):
    input_tokens: int = Field(description="characters of input (the text tokenizer is internal to the LLM)")
    output_tokens: int = Field(description="audio tokens generated (clone and edit passes)")
    total_tokens: int


# --------------------------------------------------------- transcriptions
TranscriptionFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]


class TranscriptionWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionSegment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class TranscriptionJson(BaseModel):
    text: str


class TranscriptionVerbose(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment]
    words: list[TranscriptionWord] | None = None


# --------------------------------------------------------- translations
class TranslationJson(BaseModel):
    text: str = Field(description="the speech's content in English")


class TranslationVerbose(BaseModel):
    task: Literal["translate"] = "translate"
    language: str = Field("english", description="the language of the text: always english")
    duration: float
    text: str
    segments: list[TranscriptionSegment]
