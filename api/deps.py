"""What a route needs from the running service: its one engine."""

from __future__ import annotations

import bentoml

from runners.engine import EditXEngine


def current_engine() -> EditXEngine:
    """The engine of the running service instance (the API routes and the UI callbacks share it)."""
    return bentoml.get_current_service().engine
