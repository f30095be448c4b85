"""Audio answers of /clone and /edit: the encoded bytes, with the generation metadata in X-EditX-* headers."""

from __future__ import annotations

from typing import Literal

from starlette.responses import Response

from runners.audio import encode_audio
from runners.engine import EditXEngine, Synthesis

ResponseFormat = Literal["wav", "flac", "mp3"]
MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}


def synthesis_headers(syn: Synthesis, engine: EditXEngine) -> dict[str, str]:
    """Generation metadata that rides along with the audio bytes."""
    headers = {
        "X-EditX-Duration-S": f"{syn.duration_s:.3f}",
        "X-EditX-Sample-Rate": str(syn.sample_rate),
        "X-EditX-Tokens": str(syn.generated_tokens),
        "X-EditX-Iterations": str(syn.iterations),
        "X-EditX-Tiny-Random-Weights": "true" if engine.is_tiny else "false",
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
