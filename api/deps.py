"""What a route or middleware needs from the running service: its one engine, its HTTP settings."""

from __future__ import annotations

import bentoml

from api.settings import HttpSettings
from runners.engine import EditXEngine


def current_engine() -> EditXEngine:
    """The engine of the running service instance (the API routes and the UI callbacks share it)."""
    return bentoml.get_current_service().engine


def current_service():  # noqa: ANN201 - the EditXService instance (service.py imports api, not the reverse)
    """The running service instance: its engine and its voice registry (what the /v1 routes use)."""
    return bentoml.get_current_service()


_fallback: HttpSettings | None = None


def current_settings() -> HttpSettings:
    """The running instance's HTTP settings (read once when it started).

    Before an instance exists (nothing is served then) the environment's are used, read once.
    """
    global _fallback
    try:
        settings = getattr(bentoml.get_current_service(), "http", None)
    except Exception:  # BentoMLException: not instantiated yet
        settings = None
    if isinstance(settings, HttpSettings):
        return settings
    if _fallback is None:
        _fallback = HttpSettings.from_env()
    return _fallback
