"""The one audio output of every front end: encoders, media types, headers, whole and streamed answers.

The native routes, ``/v1`` and the UI all encode here. mp3 (LAME), opus (in Ogg), aac (ADTS)
and flac go through PyAV (FFmpeg's encoders, in its wheel); wav and pcm are written here
because they are only a header and 16-bit samples. An incremental encoder writes to a sink
that cannot seek, so its output is exactly what a client receives over a stream: a wav
stream's header says "length unknown" (0xFFFFFFFF), as streaming servers do, and decoders
read such a file to its end. A whole answer carries its length (wav and flac headers), which
is why flac is never streamed: its header cannot be written before the end.
"""

from __future__ import annotations

import struct
import base64
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import numpy as np
from pydantic import BaseModel
from starlette.responses import Response

from api.captions import (
    AudioDeltaEvent,
    CaptionedAudio,
    CaptionedDoneEvent,
    CaptionEvent,
    CaptionFormat,
    caption_out,
    cue,
    render,
    turn_spans,
)
from runners.errors import InvalidInputError
from runners.pipeline.chunks import Caption, JobStream, Synthesis

AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
SPEECH_FORMATS: tuple[str, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Ogg Opus
    "aac": "audio/aac",  # ADTS
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",  # raw s16le mono at 24 kHz (X-EditX-Sample-Rate says the rate)
}
STREAMABLE: tuple[str, ...] = ("mp3", "opus", "aac", "wav", "pcm")  # flac needs its length in the header
# (container, codec, sample format PyAV is fed)
_AV: dict[str, tuple[str, str, str]] = {
    "mp3": ("mp3", "libmp3lame", "s16p"),
    "opus": ("ogg", "libopus", "s16"),
    "aac": ("adts", "aac", "fltp"),
    "flac": ("flac", "flac", "s16"),
}
_BITRATES = {"mp3": 128_000, "opus": 64_000, "aac": 128_000}


def to_s16(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] → 16-bit samples, rounded: what every format here is made from."""
    return (np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0) * 32767.0).round().astype("<i2")


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """RIFF/WAVE header for 16-bit mono; ``data_bytes`` None = unknown length (a stream)."""
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", size))


class _Sink:
    """A write-only, non-seekable file for PyAV; ``take()`` hands over what was written since last time."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class AudioEncoder:
    """One encoded stream: ``feed(chunk)`` returns the bytes ready so far, ``finish()`` the rest."""

    def __init__(self, fmt: str, sample_rate: int, *, known_length: int | None = None) -> None:
        """``known_length`` (samples) lets a wav header carry the true size when the whole audio is known."""
        if fmt not in SPEECH_FORMATS:
            raise ValueError(f"unknown audio format {fmt!r}; one of {', '.join(SPEECH_FORMATS)}")
        self.format = fmt
        self.sample_rate = sample_rate
        self.media_type = MEDIA_TYPES[fmt]
        self._started = False
        self._finished = False
        self._known_length = known_length
        self._pts = 0
        if fmt in _AV:
            self._open_av()

    def _open_av(self) -> None:
        import av
        from av.audio.fifo import AudioFifo

        container, codec, self._sample_fmt = _AV[self.format]
        self._sink = _Sink()
        # Ogg pages of 20 ms instead of about 1 s: opus bytes leave as soon as they are encoded.
        options = {"page_duration": "20000"} if container == "ogg" else {}
        self._container = av.open(self._sink, mode="w", format=container, options=options)
        stream = self._container.add_stream(codec, rate=self.sample_rate)
        stream.layout = "mono"
        stream.format = self._sample_fmt
        if self.format in _BITRATES:
            stream.bit_rate = _BITRATES[self.format]
        self._stream = stream
        self._fifo = AudioFifo()

    # ------------------------------------------------------------------ API
    def feed(self, samples: np.ndarray) -> bytes:
        """Encode more float32 mono samples in [-1, 1]; returns whatever bytes are complete now."""
        if self._finished:
            raise RuntimeError("encoder already finished")
        pcm = to_s16(samples)
        if self.format in ("wav", "pcm"):
            head = b""
            if not self._started and self.format == "wav":
                data = None if self._known_length is None else 2 * self._known_length
                head = wav_header(self.sample_rate, data)
            self._started = True
            return head + pcm.tobytes()
        self._started = True
        return self._encode(pcm)

    def finish(self) -> bytes:
        """Flush the encoder and close the container; returns the last bytes."""
        if self._finished:
            return b""
        self._finished = True
        if self.format in ("wav", "pcm"):
            if not self._started and self.format == "wav":
                return wav_header(self.sample_rate, 0 if self._known_length is None else 2 * self._known_length)
            return b""
        out = self._drain(final=True)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return out + self._sink.take()

    def encode_all(self, samples: np.ndarray) -> bytes:
        """The whole audio in one go (same bytes as feeding it in pieces)."""
        return self.feed(samples) + self.finish()

    def stream(self, chunks: Iterable[np.ndarray]) -> Iterator[bytes]:
        """Encode an iterator of chunks, yielding non-empty byte pieces as soon as they exist."""
        for chunk in chunks:
            data = self.feed(chunk)
            if data:
                yield data
        tail = self.finish()
        if tail:
            yield tail

    # ------------------------------------------------------------ internals
    def _encode(self, pcm: np.ndarray) -> bytes:
        import av

        if pcm.size:
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self.sample_rate
            frame.pts = None
            self._fifo.write(frame)
        return self._drain(final=False)

    def _drain(self, final: bool) -> bytes:
        """Encode every whole codec frame waiting in the FIFO (and the partial one at the end)."""
        size = self._stream.codec_context.frame_size or 1024
        while self._fifo.samples >= size or (final and self._fifo.samples > 0):
            frame = self._fifo.read(min(size, self._fifo.samples) if final else size)
            if final and frame.samples < size and self.format in ("opus", "aac"):
                frame = _pad(frame, size, self.sample_rate)
            frame = self._convert(frame)
            frame.pts = self._pts
            self._pts += frame.samples
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def _convert(self, frame):  # noqa: ANN001, ANN202 - av.AudioFrame
        if self._sample_fmt == "s16":
            return frame
        if not hasattr(self, "_resampler"):
            import av

            self._resampler = av.AudioResampler(format=self._sample_fmt, layout="mono", rate=self.sample_rate)
        converted = self._resampler.resample(frame)
        return converted[0] if converted else frame


def _pad(frame, size: int, rate: int):  # noqa: ANN001, ANN202 - av.AudioFrame
    """A last partial frame padded with silence (encoders with a fixed frame size need a whole one)."""
    import av

    data = frame.to_ndarray().reshape(1, -1)
    padded = np.zeros((1, size), dtype=data.dtype)
    padded[:, : data.shape[1]] = data
    out = av.AudioFrame.from_ndarray(padded, format="s16", layout="mono")
    out.sample_rate = rate
    return out


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """A whole waveform as one file of ``fmt`` (wav and flac headers carry the true length).

    A streamed flac cannot go back to write its length into the header, which libsndfile
    needs; a whole one is written by libsndfile itself.
    """
    if fmt == "flac":
        import io

        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, to_s16(samples), sample_rate, format="FLAC", subtype="PCM_16")  # the samples every format has
        return buf.getvalue()
    return AudioEncoder(fmt, sample_rate, known_length=int(np.asarray(samples).size)).encode_all(samples)


# ------------------------------------------------------------------ answers
def check_stream_format(stream: bool, fmt: str) -> None:
    """Every format streams but flac, whose header must carry the length."""
    if stream and fmt not in STREAMABLE:
        raise InvalidInputError(f"stream=true sends {', '.join(STREAMABLE)}, not {fmt}; flac is sent whole",
                                field="response_format")


def base_headers(tiny: bool, streamed: bool) -> dict[str, str]:
    """What every audio answer says before its audio exists."""
    return {"X-EditX-Sample-Rate": "24000", "X-EditX-Streamed": "true" if streamed else "false",
            "X-EditX-Tiny-Random-Weights": "true" if tiny else "false"}


def synthesis_headers(syn: Synthesis, tiny: bool) -> dict[str, str]:
    """Generation metadata that rides along with a whole answer's bytes."""
    headers = {
        **base_headers(tiny, streamed=False),
        "X-EditX-Duration-S": f"{syn.duration_s:.3f}",
        "X-EditX-Sample-Rate": str(syn.sample_rate),
        "X-EditX-Tokens": str(syn.generated_tokens),
        "X-EditX-Iterations": str(syn.iterations),
    }
    for stage, seconds in syn.timings.items():
        headers[f"X-EditX-Time-{stage.capitalize()}-S"] = f"{seconds:.3f}"
    headers["X-EditX-Time-Total-S"] = f"{sum(syn.timings.values()):.3f}"
    return headers


def whole_response(syn: Synthesis, fmt: str, headers: dict[str, str], filename: str = "editx") -> Response:
    """A whole answer: the file with its length, and the metadata headers."""
    return Response(encode(syn.samples, syn.sample_rate, fmt), media_type=MEDIA_TYPES[fmt],
                    headers={**headers, "Content-Disposition": f'attachment; filename="{filename}.{fmt}"'})


def encoded(chunks: JobStream, fmt: str) -> Iterator[bytes]:
    """A job's chunks as the bytes of one ``fmt`` stream, piece by piece; closing this closes the job."""
    pieces = encoded_with_captions(chunks, fmt)
    try:
        for data, _, _ in pieces:
            if data:
                yield data
    finally:
        pieces.close()


def sse_events(pieces: Iterable[bytes], done: Callable[[], BaseModel]) -> Iterator[bytes]:
    """Server-sent events: each piece base64-encoded in a ``speech.audio.delta``, then ``speech.audio.done``."""
    for piece in pieces:
        yield sse_event(AudioDeltaEvent(audio=base64.b64encode(piece).decode()))
    final = {"type": "speech.audio.done", "usage": done().model_dump()}
    yield f"data: {json.dumps(final)}\n\n".encode()


# ------------------------------------------------------------------ captioned answers
def sse_event(event: BaseModel) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line (the event's ``type`` names it)."""
    return f"data: {json.dumps(event.model_dump(mode='json'))}\n\n".encode()


def captioned_body(syn: Synthesis, fmt: str, captions: CaptionFormat) -> CaptionedAudio:
    """A whole answer with captions: the encoded file in base64 beside the captions in ``captions``' format."""
    return CaptionedAudio(audio=base64.b64encode(encode(syn.samples, syn.sample_rate, fmt)).decode(),
                          response_format=fmt, media_type=MEDIA_TYPES[fmt], sample_rate=syn.sample_rate,
                          duration_s=round(syn.duration_s, 3), caption_format=captions,
                          captions=render(syn.captions, captions), turns=turn_spans(syn.captions))


def encoded_with_captions(chunks: JobStream, fmt: str) -> Iterator[tuple[bytes, tuple[Caption, ...], int]]:
    """A job's chunks as (bytes of one ``fmt`` stream, captions ended by then, samples) pieces; closes the job."""
    encoder = AudioEncoder(fmt, chunks.sample_rate)
    try:
        for chunk in chunks:
            data = encoder.feed(chunk.samples) if chunk.samples.size else b""
            if data or chunk.captions or chunk.samples.size:
                yield data, chunk.captions, int(chunk.samples.size)
        tail = encoder.finish()
        if tail:
            yield tail, (), 0
    finally:
        chunks.close()


def captioned_events(pieces: Iterable[tuple[bytes, tuple[Caption, ...], int]], fmt: str, sample_rate: int,
                     captions: CaptionFormat, done: Callable[[], tuple[int, BaseModel | None]]) -> Iterator[bytes]:
    """Server-sent events of a captioned answer, in the order things become known.

    ``speech.audio.delta`` (base64 audio bytes), ``speech.caption`` after the audio it captions (one
    per caption, as soon as its end is known, with its SRT/WebVTT cue), then ``speech.audio.done``
    with every caption in the chosen format, the turn spans of a dialogue, the duration and
    ``done()``'s (tokens, usage).
    """
    made: list[Caption] = []
    samples = 0
    for data, ended, count in pieces:
        samples += count
        if data:
            yield sse_event(AudioDeltaEvent(audio=base64.b64encode(data).decode()))
        for caption in ended:
            made.append(caption)
            yield sse_event(CaptionEvent(caption=caption_out(caption), cue=cue(caption, len(made), captions)))
    tokens, usage = done()
    yield sse_event(CaptionedDoneEvent(
        usage=usage.model_dump() if usage is not None else None, tokens=tokens, response_format=fmt,
        media_type=MEDIA_TYPES[fmt], sample_rate=sample_rate, duration_s=round(samples / sample_rate, 3),
        caption_format=captions, captions=render(made, captions), turns=turn_spans(made)))
