"""GET /v1/models: the speech model and the Whisper model behind /v1/audio/transcriptions."""

from __future__ import annotations

from fastapi import APIRouter

from api.openai.backend import BackendProvider
from api.openai.errors import OpenAIRoute
from api.openai.protocol import SPEECH_MODEL, TRANSCRIPTION_MODEL, ModelCard, ModelList
from runners.errors import NotFoundError


def router(backend: BackendProvider) -> APIRouter:
    api = APIRouter(route_class=OpenAIRoute, tags=["OpenAI-compatible"])

    def cards() -> list[ModelCard]:
        engine = backend().engine
        return [
            ModelCard(id=SPEECH_MODEL, root=engine.config.model_path),
            ModelCard(id=TRANSCRIPTION_MODEL, owned_by="openai", root=engine.transcriber.config.model),
        ]

    @api.get("/v1/models", response_model=ModelList)
    def list_models() -> ModelList:
        """The models this service answers for (OpenAI's TTS names are accepted as aliases of the first)."""
        return ModelList(data=cards())

    @api.get("/v1/models/{model_id}", response_model=ModelCard)
    def get_model(model_id: str) -> ModelCard:
        for card in cards():
            if card.id == model_id:
                return card
        raise NotFoundError(f"model {model_id!r} does not exist; see GET /v1/models", field="model")

    return api
