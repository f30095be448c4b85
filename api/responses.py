"""Audio answers of /clone and /edit: the encoded bytes, with the generation metadata in X-EditX-* headers."""

from __future__ import annotations

from typing import Literal

from starlette.responses import Response

from api.engine_calls import pcm16
from runners.audio import encode_audio
from runners.errors import InvalidInputError
from runners.engine import EditXEngine, Synthesis

ResponseFormat = Literal["wav", "flac", "mp3", "pcm"]
MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg",
                               "pcm": "audio/L16;rate=24000;channels=1"}
STREAMABLE = ("wav", "pcm")


def check_stream_format(stream: bool, fmt: str) -> None:
    """A stream is sent as wav (open-ended header) or raw pcm; other formats need the whole audio."""
    if stream and fmt not in STREAMABLE:
        raise InvalidInputError(f"stream=true sends wav or pcm, not {fmt}; set response_format=wav or pcm",
                                field="response_format")


def stream_headers(engine: EditXEngine) -> dict[str, str]:
    """What a streamed answer can say before its audio exists."""
    return {"X-EditX-Sample-Rate": "24000", "X-EditX-Stream": "true",
            "X-EditX-Tiny-Random-Weights": "true" if engine.is_tiny else "false"}


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
    body = pcm16(syn.samples) if fmt == "pcm" else encode_audio(syn.samples, syn.sample_rate, fmt)
    return Response(
        body,
        media_type=MEDIA_TYPES[fmt],
        headers={
            **synthesis_headers(syn, engine),
            "Content-Disposition": f'attachment; filename="editx.{fmt}"',
        },
    )
