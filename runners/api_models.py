"""HTTP-facing models and glue logic shared by the BentoML service and its tests.

``service.py`` stays thin: request/response models, format negotiation, the
error → status mapping (in ONE place: :func:`error_response`), generation
metadata headers and the /status report all live here, testable without a
server.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from runners.audio import Audio, AudioDecodeError, decode_audio, encode_audio
from runners.engine import EditXEngine, Synthesis
from runners.errors import USER_ERRORS, EngineUnavailableError, InputTooLargeError, InvalidInputError

log = logging.getLogger("editx.api")

ResponseFormat = Literal["wav", "flac", "mp3"]
MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}
TINY_NOTE = "tiny random-weight model (EDITX_MODEL_PATH=tiny): the output is noise, for testing only"

# Room for multipart framing and the text fields on top of the audio file itself.
FORM_OVERHEAD_BYTES = 1024 * 1024


class ErrorBody(BaseModel):
    """What every 4xx/5xx answer of this service carries."""

    error: str = Field(description="what is wrong and how to fix it")
    field: str | None = Field(None, description="the request field at fault, when there is one")


class Limits(BaseModel):
    """Request limits in force (EDITX_* variables)."""

    max_audio_s: float
    max_text_chars: int
    max_total_tokens: int
    max_upload_bytes: int


class MemoryInfo(BaseModel):
    """Memory in use (MiB): the process RSS, and the CUDA allocator's figures on a GPU."""

    rss_mb: float | None = None
    gpu_allocated_mb: float | None = None
    gpu_reserved_mb: float | None = None
    weights_cpu_mb: float | None = Field(None, description="model weights this engine holds in CPU memory")
    weights_cuda_mb: float | None = Field(None, description="model weights this engine holds on the GPU")


class StatusResponse(BaseModel):
    """The engine as an operator needs to see it."""

    state: Literal["unloaded", "loading", "loaded", "offloaded", "failed"]
    ready: bool = Field(description="whether requests are served now (or trigger a load); same as /readyz")
    error: str | None = Field(None, description="why loading failed, when state is 'failed'")
    device: str
    llm_dtype: str
    decoder_dtype: str
    model_path: str = Field(description="EDITX_MODEL_PATH as given")
    model_root: str | None = Field(None, description="resolved local model root, once known")
    tiny_random_weights: bool
    note: str | None = Field(None, description="plain warning, e.g. that the tiny model's output is noise")
    load_count: int
    load_seconds: float | None
    lazy_load: bool | None = None
    idle_unload_s: float | None = None
    idle_action: str | None = None
    idle_s: float | None = None
    time_until_unload_s: float | None = None
    last_unload: dict[str, Any] | None = None
    cache: dict[str, Any] | None = Field(None, description="prompt cache statistics (hits, misses, hit_rate, …)")
    auto_transcribe: bool | None = Field(None, description="empty prompt_text/audio_text is transcribed")
    asr: dict[str, Any] | None = Field(None, description="the speech recognition model: name, device, state")
    llm_quantization: str | None = Field(None, description="the LLM variant: none, int8, nf4 or awq (EDITX_LLM_QUANTIZATION)")
    llm_weights: dict[str, float] | None = Field(
        None, description="LLM weight memory once loaded, MiB: total_mb, layers_mb (the quantized projections), "
        "the same in bf16 and the ratios total_vs_bf16, layers_vs_bf16"
    )
    llm_quantization_note: str | None = Field(None, description="what the variant means at run time, when it matters")
    idle_action_effective: str | None = Field(None, description="what idle does with this variant (int8/nf4 unload)")
    memory: MemoryInfo
    limits: Limits
    versions: dict[str, str]


_VERSIONED = ("torch", "torchaudio", "transformers", "bentoml", "gradio", "funasr", "onnxruntime", "soundfile")


def package_versions() -> dict[str, str]:
    """Versions that matter when a bug report comes in."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def build_status(engine: EditXEngine) -> StatusResponse:
    """engine.status() plus the limits, the versions and a plain note for the tiny model."""
    raw = dict(engine.status())
    cfg = engine.config
    known = set(StatusResponse.model_fields)
    return StatusResponse(
        **{k: v for k, v in raw.items() if k in known and k not in ("memory", "ready")},
        ready=bool(raw.get("ready", engine.is_loaded)),
        memory=MemoryInfo(**(raw.get("memory") or {})),
        note=TINY_NOTE if cfg.is_tiny else None,
        limits=Limits(
            max_audio_s=cfg.max_audio_s,
            max_text_chars=cfg.max_text_chars,
            max_total_tokens=cfg.max_total_tokens,
            max_upload_bytes=cfg.max_upload_bytes,
        ),
        versions=package_versions(),
    )


# ----------------------------------------------------------------- requests
def require_ready(engine: EditXEngine) -> None:
    """Answer 503 at once during the first load (instead of blocking on the engine lock) or after a failure.

    A lazily loaded, idle-unloaded or offloaded engine is ready: the request itself brings it back.
    """
    if engine.ready:
        return
    if engine.state == "failed":
        raise EngineUnavailableError(f"the model failed to load: {engine.error}; see GET /status")
    raise EngineUnavailableError("the model is still loading; retry when GET /readyz answers 200")


def read_upload(path: Path | str, field: str, max_bytes: int) -> Audio:
    """Decode an uploaded file; the declared content type is ignored, the bytes are judged."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise InvalidInputError(f"{field} is an empty file (0 bytes)", field=field)
    if size > max_bytes:
        raise InputTooLargeError(
            f"{field} is {size} bytes; the upload limit is {max_bytes} bytes (EDITX_MAX_UPLOAD_BYTES)", field=field
        )
    try:
        return decode_audio(path)
    except AudioDecodeError as exc:
        # libsndfile's reason without the server-side temporary path it quotes.
        reason = getattr(exc.__cause__, "error_string", None) or "no samples"
        raise InvalidInputError(
            f"{field} is not audio that can be decoded ({reason.rstrip('.')}); send WAV, FLAC, OGG or MP3",
            field=field,
        ) from exc


def synthesis_headers(syn: Synthesis, engine: EditXEngine) -> dict[str, str]:
    """Generation metadata that rides along with the audio bytes."""
    headers = {
        "X-EditX-Duration-S": f"{syn.duration_s:.3f}",
        "X-EditX-Sample-Rate": str(syn.sample_rate),
        "X-EditX-Tokens": str(syn.generated_tokens),
        "X-EditX-Iterations": str(syn.iterations),
        "X-EditX-Tiny-Random-Weights": "true" if engine.config.is_tiny else "false",
    }
    for stage, seconds in syn.timings.items():
        headers[f"X-EditX-Time-{stage.capitalize()}-S"] = f"{seconds:.3f}"
    headers["X-EditX-Time-Total-S"] = f"{sum(syn.timings.values()):.3f}"
    return headers


def audio_response(syn: Synthesis, fmt: ResponseFormat, engine: EditXEngine) -> Response:
    body = encode_audio(syn.samples, syn.sample_rate, fmt)
    return Response(
        body,
        media_type=MEDIA_TYPES[fmt],
        headers={
            **synthesis_headers(syn, engine),
            "Content-Disposition": f'attachment; filename="editx.{fmt}"',
        },
    )


# ------------------------------------------------------------------- errors
def error_status(exc: BaseException) -> int | None:
    """The HTTP status of an error this service knows; None for a bug (→ 500)."""
    if isinstance(exc, USER_ERRORS):
        return int(exc.status_code)
    return None


def error_response(exc: BaseException) -> JSONResponse:
    """The ONE place where engine errors become HTTP answers."""
    status = error_status(exc)
    if status is None:
        log.exception("unexpected error", exc_info=exc)
        body = ErrorBody(error="internal error; see the server log")
        return JSONResponse(body.model_dump(), status_code=500)
    body = ErrorBody(error=str(exc), field=getattr(exc, "field", None))
    log.warning("refused with %d: %s", status, body.error, extra={"stage": "request"})
    headers = {"Retry-After": "10"} if status == 503 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)
