"""The bodies of the native audio APIs (/clone, /edit, /transcribe): a form becomes one engine job.

``service.py`` declares these routes with BentoML (their typed forms, docs and limits) and
calls these functions; the job is answered by the one path of every front end
(:func:`api.engine_calls.answer_job`), and refusals take the native error shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from api.captions import CaptionFormat
from api.engine_calls import answer_job, client_gone_response
from api.errors import error_response
from api.status import require_ready
from api.uploads import read_upload
from runners.engine import EditXEngine
from runners.errors import USER_ERRORS, RequestAbortedError
from runners.jobs import CloneJob, EditJob, Job, parse_instructions
from runners.models.asr import Transcription


async def answer_native(engine: EditXEngine, request: Request | None, make_job: Callable[[], Awaitable[Job]], *,
                        headers: Callable[[Job], dict[str, str]] | None = None, **options: Any) -> Response:
    """A native route's job built and answered by :func:`api.engine_calls.answer_job` (``options`` go to it).

    The one place where a native route's refusals take the native error shape: a bad form, a
    model not ready, a full queue; a client that left gets 499. ``headers`` adds the job's own.
    """
    try:
        require_ready(engine)
        job = await make_job()
        return await answer_job(request, engine, job, headers=headers(job) if headers else None, **options)
    except USER_ERRORS as exc:
        return error_response(exc)
    except RequestAbortedError:
        return client_gone_response()


async def _upload(engine: EditXEngine, path: Path | None, field: str):  # noqa: ANN202 - Audio | None
    if path is None:
        return None
    return await anyio.to_thread.run_sync(read_upload, path, field, engine.config.max_upload_bytes)


async def clone_job(engine: EditXEngine, *, target_text: str, prompt_audio: Path | None, voice: str,
                    prompt_text: str, seed: int | None, speed: float, instructions: str) -> CloneJob:
    """The job of a /clone form (also what the clone task runs): the upload decoded, the instructions parsed."""
    prompt = await _upload(engine, prompt_audio, "prompt_audio")
    return CloneJob(target_text, prompt, prompt_text or None, voice or None, seed, speed,
                    parse_instructions(instructions))


async def edit_job(engine: EditXEngine, *, audio: Path, edit_type: str, edit_info: str, audio_text: str,
                   target_text: str, n_edit_iter: int, seed: int | None) -> EditJob:
    """The job of an /edit form (also what the edit task runs)."""
    source = await _upload(engine, audio, "audio")
    return EditJob(source, edit_type, edit_info or None, audio_text or None, target_text or None, n_edit_iter, seed)


async def clone(engine: EditXEngine, request: Request | None, *, target_text: str, prompt_audio: Path | None,
                voice: str, prompt_text: str, seed: int | None, response_format: str, speed: float,
                instructions: str, stream: bool, captions: CaptionFormat | None = None) -> Response:
    """POST /clone: speak ``target_text`` in the uploaded or registered voice, then any edit passes."""
    async def make() -> Job:
        return await clone_job(engine, target_text=target_text, prompt_audio=prompt_audio, voice=voice,
                               prompt_text=prompt_text, seed=seed, speed=speed, instructions=instructions)
    return await answer_native(engine, request, make, stream=stream, fmt=response_format, captions=captions)


async def edit(engine: EditXEngine, request: Request | None, *, audio: Path, edit_type: str, edit_info: str,
               audio_text: str, target_text: str, n_edit_iter: int, seed: int | None, response_format: str,
               stream: bool) -> Response:
    """POST /edit: edit the uploaded audio ``n_edit_iter`` times."""
    async def make() -> Job:
        return await edit_job(engine, audio=audio, edit_type=edit_type, edit_info=edit_info, audio_text=audio_text,
                              target_text=target_text, n_edit_iter=n_edit_iter, seed=seed)
    return await answer_native(engine, request, make, stream=stream, fmt=response_format)


async def transcribe(engine: EditXEngine, audio: Path, language: str) -> Transcription | Response:
    """POST /transcribe: what is said in the uploaded audio (through the engine: cached, on its idle clock)."""
    try:
        require_ready(engine)
        clip = await _upload(engine, audio, "audio")
        return await anyio.to_thread.run_sync(engine.transcribe, clip, language or None)
    except USER_ERRORS as exc:
        return error_response(exc)
