"""/v1/audio/voices: register, list, show and delete named voices (runners.voices does the work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from api.openai.backend import BackendProvider, read_audio
from api.openai.errors import OpenAIRoute
from api.openai.protocol import VoiceDeleted, VoiceList, VoiceObject
from api.status import require_ready
from runners.errors import InvalidInputError


def router(backend: BackendProvider) -> APIRouter:
    api = APIRouter(route_class=OpenAIRoute, tags=["OpenAI-compatible"])

    @api.post("/v1/audio/voices", response_model=VoiceObject, status_code=201)
    def create_voice(
        name: Annotated[str, Form(description="1–64 characters of A–Z a–z 0–9 _ -; also the voice's id")],
        audio: Annotated[UploadFile | None, File(description="the voice: WAV/FLAC/OGG/MP3, 0.1–30 s")] = None,
        audio_sample: Annotated[UploadFile | None, File(description="same as audio (OpenAI's field name)")] = None,
        text: Annotated[str, Form(description="transcript of the audio; empty = transcribed by Whisper")] = "",
        consent: Annotated[str, Form(description="accepted for OpenAI clients; not used")] = "",
    ) -> VoiceObject:
        """Register a voice: its audio, transcript and prompt features are stored, so cloning with it is cheap."""
        svc = backend()
        if audio is not None and audio_sample is not None:
            raise InvalidInputError("send the voice as audio or as audio_sample, not both", field="audio")
        require_ready(svc.engine)
        clip = read_audio(audio or audio_sample, "audio", svc.engine.config.max_upload_bytes)
        voice = svc.engine.create_voice(name, clip, text or None)
        return VoiceObject(**voice.model_dump())

    @api.get("/v1/audio/voices", response_model=VoiceList)
    @api.get("/v1/voices", response_model=VoiceList, include_in_schema=False)  # the path some TTS clients ask
    def list_voices() -> VoiceList:
        """Every registered voice (all replicas sharing EDITX_VOICES_DIR see the same list)."""
        return VoiceList(data=[VoiceObject(**v.model_dump()) for v in backend().voices.all()])

    @api.get("/v1/audio/voices/{voice_id}", response_model=VoiceObject)
    def get_voice(voice_id: str) -> VoiceObject:
        return VoiceObject(**backend().voices.get(voice_id, field="voice_id").model_dump())

    @api.delete("/v1/audio/voices/{voice_id}", response_model=VoiceDeleted)
    def delete_voice(voice_id: str) -> VoiceDeleted:
        backend().voices.delete(voice_id)
        return VoiceDeleted(id=voice_id)

    return api
