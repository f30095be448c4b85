"""OpenAI-compatible routes: /v1/models, /v1/audio/{speech,transcriptions,translations,voices}.

Each module holds one router (thin) over ``runners``; ``protocol`` holds the pydantic models
and ``errors`` the one route class that answers every /v1 error in OpenAI's shape.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.openai import models, speech, transcriptions, translations, voices
from api.openai.backend import Backend, BackendProvider

__all__ = ["Backend", "BackendProvider", "build_router"]


def build_router(backend: BackendProvider) -> APIRouter:
    """Every /v1 route, calling ``backend()`` for the running service's engine and voice registry."""
    root = APIRouter()
    for module in (models, speech, transcriptions, translations, voices):
        root.include_router(module.router(backend))
    return root
