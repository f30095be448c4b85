"""The ONE status model (GET /status and the UI's status panel) and the readiness gate of the requests."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runners.decoder_worker import DecoderStats
from runners.scheduler import SchedulerStats
from runners.engine import EditXEngine
from runners.errors import EngineUnavailableError

TINY_NOTE = "tiny random-weight model (EDITX_MODEL_PATH=tiny): the output is noise, for testing only"


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

    # engine.status() may grow keys before this model learns them: they are dropped, never an error.
    model_config = ConfigDict(extra="ignore")

    state: Literal["unloaded", "loading", "loaded", "offloaded", "failed"]
    ready: bool = Field(description="whether requests are served now (or trigger a load); same as /readyz")
    error: str | None = Field(None, description="why loading failed, when state is 'failed'")
    device: str
    llm_dtype: str
    decoder_dtype: str
    model_path: str = Field(description="EDITX_MODEL_PATH as given")
    model_root: str | None = Field(None, description="resolved local model root, once known")
    tiny_random_weights: bool = Field(description="the random tiny model (by name or by its marker file)")
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
    scheduler: SchedulerStats | None = Field(None, description="continuous batching: running and waiting "
                                                               "requests, batch size, ids made and ids/s")
    decoder: DecoderStats | None = Field(None, description="the decoder worker: batches of flow + vocoder "
                                                          "(size, seconds, queue depth; EDITX_DECODER_BATCH)")
    llm_quantization: str | None = Field(None, description="the LLM variant: none, int8, nf4 or awq (EDITX_LLM_QUANTIZATION)")
    llm_weights: dict[str, float] | None = Field(
        None, description="LLM weight memory once loaded, MiB: total_mb, layers_mb (the quantized projections), "
        "the same in bf16 and the ratios total_vs_bf16, layers_vs_bf16"
    )
    llm_quantization_note: str | None = Field(None, description="what the variant means at run time, when it matters")
    idle_action_effective: str | None = Field(None, description="what idle does with this variant (int8/nf4 unload)")
    memory: MemoryInfo
    auth: Literal["on", "off"] = Field("off", description="whether API keys are required (EDITX_API_KEYS)")
    limits: Limits
    versions: dict[str, str]


_VERSIONED = ("torch", "torchaudio", "transformers", "bentoml", "gradio", "funasr", "onnxruntime", "soundfile")


@functools.cache
def package_versions() -> dict[str, str]:
    """Versions that matter when a bug report comes in (fixed for the life of the process)."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def build_status(engine: EditXEngine, *, auth: bool = False) -> StatusResponse:
    """engine.status() plus the limits, the versions, whether keys are required and a note for the tiny model."""
    raw = dict(engine.status())
    cfg = engine.config
    raw["ready"] = bool(raw.get("ready", engine.is_loaded))
    raw["tiny_random_weights"] = engine.is_tiny
    return StatusResponse(
        **raw,
        note=TINY_NOTE if engine.is_tiny else None,
        auth="on" if auth else "off",
        limits=Limits(
            max_audio_s=cfg.max_audio_s,
            max_text_chars=cfg.max_text_chars,
            max_total_tokens=cfg.max_total_tokens,
            max_upload_bytes=cfg.max_upload_bytes,
        ),
        versions=dict(package_versions()),
    )


def require_ready(engine: EditXEngine) -> None:
    """Answer 503 at once during the first load (instead of blocking on the engine lock) or after a failure.

    A lazily loaded, idle-unloaded or offloaded engine is ready: the request itself brings it back.
    """
    if engine.ready:
        return
    if engine.state == "failed":
        raise EngineUnavailableError(f"the model failed to load: {engine.error}; see GET /status")
    raise EngineUnavailableError("the model is still loading; retry when GET /readyz answers 200")
