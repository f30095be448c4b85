"""GET /status, GET /vocabulary, GET /logs, POST /cache/clear: thin over the engine and the log buffer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from api.deps import current_engine, current_settings
from api.logs import LogRecordOut, installed
from api.status import StatusResponse, build_status
from runners.text.vocab import EditVocabulary
from runners.engine import EditXEngine
from runners.prompt_cache import CacheStats

router = APIRouter(tags=["Service APIs"])
Engine = Annotated[EditXEngine, Depends(current_engine)]


@router.get("/status", response_model=StatusResponse)
def status(engine: Engine) -> StatusResponse:
    """Engine state (loaded/loading/unloaded/failed and why), device, dtypes, model, memory, versions."""
    return build_status(engine, auth=bool(current_settings().keys()))


@router.get("/vocabulary", response_model=EditVocabulary)
def vocabulary(engine: Engine) -> EditVocabulary:
    """Every edit_type with its allowed edit_info values, and the paralinguistic tags."""
    return engine.vocabulary


@router.get("/logs", response_model=list[LogRecordOut])
def logs(limit: int = 100, min_level: str = "INFO", since: float | None = None) -> list[LogRecordOut]:
    """The newest log records of this process (requests, stage timings, cache hits, loads, errors).

    Pass the last record's ``created`` back as ``since`` to poll only for newer ones.
    """
    buffer = installed()
    if buffer is None:
        return []
    return buffer.records(limit=min(limit, 1000), min_level=min_level, since=since)


@router.post("/cache/clear", response_model=CacheStats)
def clear_cache(engine: Engine) -> CacheStats:
    """Empty the prompt cache (memory and disk) and reset its statistics; returns them."""
    engine.clear_prompt_cache()
    return engine.cache.stats()
