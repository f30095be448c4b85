"""What the /v1 routes need from the running service, and reading an uploaded audio file."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from fastapi import UploadFile

from api.uploads import decode_field
from runners.audio import Audio
from runners.errors import InputTooLargeError, InvalidInputError

if TYPE_CHECKING:
    from runners.engine import EditXEngine
    from runners.voices import VoiceRegistry


class Backend(Protocol):
    """The service instance: its one engine and its voice registry."""

    engine: "EditXEngine"
    voices: "VoiceRegistry"


BackendProvider = Callable[[], Backend]


def read_audio(upload: UploadFile | None, field: str, max_bytes: int) -> Audio:
    """Decode an uploaded file by its bytes (the declared type is ignored)."""
    if upload is None:
        raise InvalidInputError(f"{field} is required: send an audio file", field=field)
    data = upload.file.read(max_bytes + 1)
    if not data:
        raise InvalidInputError(f"{field} is an empty file (0 bytes)", field=field)
    if len(data) > max_bytes:
        raise InputTooLargeError(f"{field} is over the upload limit of {max_bytes} bytes (EDITX_MAX_UPLOAD_BYTES)",
                                 field=field)
    return decode_field(data, field)
