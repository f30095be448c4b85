"""Audio front end: decode, mono-mix, resample, peak handling, silence trim.

Everything works on 1-D float32 torch tensors plus an explicit sample rate.
The rules follow the official pipeline (UPSTREAM.md §1.3), except that input
below 16 kHz is resampled up instead of failing.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from runners.errors import InputTooLargeError, InvalidInputError

TOKENIZER_RATE = 16000
DECODER_RATE = 24000
PROMPT_PEAK = 0.6  # the prompt is limited to this peak before any feature is taken
TOKENIZER_PEAK = 0.999


class AudioDecodeError(InvalidInputError):
    """The bytes are not audio that can be decoded (or hold no samples).

    ``reason`` is the short cause without any file name, so an API can quote it
    without leaking the server's temporary paths.
    """

    def __init__(self, message: str, field: str | None = "audio", reason: str | None = None) -> None:
        super().__init__(message, field=field)
        self.reason = reason or message


class AudioTooLongError(AudioDecodeError, InputTooLargeError):
    """Decoding stopped at the duration cap (HTTP 413): a small compressed file can expand to hours."""


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] and their sample rate."""

    samples: torch.Tensor  # (N,)
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.samples.numel() / self.sample_rate

    def resampled(self, rate: int) -> "Audio":
        return Audio(resample(self.samples, self.sample_rate, rate), rate)


# Decoding stops past this much audio: a few MB of Opus or constant FLAC would otherwise
# expand to many GB of float32 before any duration check could refuse it.
DEFAULT_MAX_DECODE_S = 3600.0
# The cap in samples, whatever the rate: 1 h at 48 kHz (about 700 MB of float32).
MAX_DECODE_SAMPLES = int(DEFAULT_MAX_DECODE_S * 48000)
_SF_BLOCK = 1 << 16  # frames per libsndfile read: bounded memory even when a header lies about the length
# The demuxers FFmpeg may pick (judged by the bytes): containers that hold their own audio.
# Playlists and concat lists, which make FFmpeg open further files or URLs, are not among them.
_AV_FORMATS = "mov,matroska,ogg,aac,mp3,wav,flac"


class _Collector:
    """Mono chunks gathered under the decode cap; raises AudioTooLongError as soon as it is passed."""

    def __init__(self, rate: int, max_seconds: float) -> None:
        if rate <= 0:
            raise AudioDecodeError(f"invalid sample rate {rate}", reason=f"invalid sample rate {rate}")
        self.rate = rate
        self.limit = min(int(max_seconds * rate), MAX_DECODE_SAMPLES)
        self.chunks: list[np.ndarray] = []
        self.total = 0

    def add(self, channels_first: np.ndarray) -> None:
        mono = to_mono(torch.from_numpy(channels_first)).numpy()
        self.total += mono.size
        if self.total > self.limit:
            reason = f"it lasts more than {self.limit / self.rate:g} s; decoding stopped there"
            raise AudioTooLongError(f"the audio is too long ({reason})", reason=reason)
        self.chunks.append(mono)

    def audio(self) -> Audio:
        if self.total == 0:
            raise AudioDecodeError("the audio file holds no samples", reason="no samples")
        samples = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        return Audio(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), self.rate)


def decode_audio(source: bytes | str | os.PathLike[str], max_seconds: float = DEFAULT_MAX_DECODE_S) -> Audio:
    """Decode any common audio upload from bytes or a path, judged by its bytes alone.

    libsndfile first (WAV/FLAC/OGG Vorbis+Opus/MP3: exact and fast), then FFmpeg through
    PyAV for what it cannot read: WebM/Matroska, M4A/MP4 (also video with a sound track),
    raw ADTS AAC. Both decode incrementally and stop past ``max_seconds``
    (AudioTooLongError). Every failure is an AudioDecodeError (HTTP 4xx).
    """
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else None
    if data is not None and not data:
        raise AudioDecodeError("the audio file is empty", reason="empty file")
    try:
        return _decode_sndfile(data, source, max_seconds)
    except AudioTooLongError:
        raise
    except AudioDecodeError as sndfile_error:
        return _decode_av(data, source, max_seconds, sndfile_error)


def _decode_sndfile(data: bytes | None, source: object, max_seconds: float) -> Audio:
    try:
        with sf.SoundFile(io.BytesIO(data) if data is not None else Path(source)) as f:  # type: ignore[arg-type]
            found = _Collector(int(f.samplerate), max_seconds)
            while True:
                block = f.read(_SF_BLOCK, dtype="float32", always_2d=True)
                if not len(block):
                    break
                found.add(block.T)
    except AudioDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile's errors, and whatever else odd bytes provoke: FFmpeg tries next
        # error_string is libsndfile's reason without the file name that str(exc) quotes. Its mp3 probe
        # answers "File does not exist ..." for bytes it does not know: a missing file is told by the
        # FFmpeg step (which opens the file itself), so here that means the format.
        reason = str(getattr(exc, "error_string", "") or "").rstrip(".")
        if not reason or reason.startswith("File does not exist"):
            reason = "format not recognised"
        reason = reason[:1].lower() + reason[1:]  # it continues a sentence: "... decoded (format not recognised)"
        raise AudioDecodeError(f"not a readable audio file ({reason})", reason=reason) from exc
    return found.audio()


def _decode_av(data: bytes | None, source: object, max_seconds: float, sndfile_error: AudioDecodeError) -> Audio:
    """FFmpeg's demuxers and decoders: the first audio stream, every frame, at the stream's own rate."""
    try:
        import av  # loaded only for what libsndfile cannot read

        with (io.BytesIO(data) if data is not None else open(source, "rb")) as fileobj:  # type: ignore[arg-type]
            # A file object, never a name: FFmpeg must not guess the format from an extension.
            try:
                container = av.open(fileobj, mode="r", container_options={"format_whitelist": _AV_FORMATS},
                                    metadata_errors="replace")  # tags are not ours to judge
            except av.FFmpegError:
                raise sndfile_error from None  # neither library knows these bytes: libsndfile's reason
            with container:
                if not container.streams.audio:
                    raise AudioDecodeError("the file has no audio stream", reason="the file has no audio stream")
                return _decode_stream(av, container, container.streams.audio[0], max_seconds)
    except AudioDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile bytes can break FFmpeg in many ways; all are the client's 400
        reason = str(getattr(exc, "strerror", None) or type(exc).__name__)
        raise AudioDecodeError(f"not a readable audio file ({reason})", reason=reason) from exc


def _decode_stream(av: ModuleType, container: Any, stream: Any, max_seconds: float) -> Audio:
    """Decode ``stream`` packet by packet into float32 mono; a corrupt packet is skipped unless most are."""
    found: _Collector | None = None
    resampler: Any = None
    layout_seen: tuple[str, str, int] | None = None
    good = bad = 0

    def take(frame: Any) -> None:
        nonlocal found, resampler, layout_seen
        if found is None:
            found = _Collector(int(frame.sample_rate), max_seconds)  # the stream's own rate, as decoded
        shape = (frame.format.name, frame.layout.name, int(frame.sample_rate))
        if shape != layout_seen:  # a chained stream may change layout or rate midway
            if resampler is not None:
                for out in resampler.resample(None):
                    found.add(out.to_ndarray())
            resampler = av.AudioResampler(format="fltp", rate=found.rate)
            layout_seen = shape
        for out in resampler.resample(frame):
            found.add(out.to_ndarray())  # (channels, n) float32: planar

    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                bad += 1
                continue
            if packet.size:
                good += 1
            for frame in frames:
                take(frame)
    except av.FFmpegError:
        pass  # the container breaks off (a truncated upload): keep what was decoded before it
    if resampler is not None and found is not None:
        for out in resampler.resample(None):
            found.add(out.to_ndarray())
    if bad and (found is None or bad > good):
        reason = f"the audio stream is corrupt: {bad} of {good + bad} packets could not be decoded"
        raise AudioDecodeError(f"not a readable audio file ({reason})", reason=reason)
    if found is None:
        raise AudioDecodeError("the audio file holds no samples", reason="no samples")
    return found.audio()


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """(C, N) or (N,) → (N,) by averaging channels."""
    if wav.dim() == 1:
        return wav.float()
    return wav.float().mean(dim=0)


def resample(wav: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    if rate == target:
        return wav
    return AF.resample(wav, rate, target)


def limit_peak(wav: torch.Tensor, peak: float = PROMPT_PEAK) -> torch.Tensor:
    """Scale down (never up) so that max|x| ≤ peak; keeps repeated edits from clipping."""
    top = float(wav.abs().max()) if wav.numel() else 0.0
    return wav * (peak / top) if top > peak else wav


def normalize_peak(wav: torch.Tensor, peak: float = TOKENIZER_PEAK, floor: float = 0.01) -> torch.Tensor:
    """Scale so that max|x| = peak; near-silent input is scaled as if its peak were ``floor``."""
    top = float(wav.abs().max()) if wav.numel() else 0.0
    return wav / max(top, floor) * peak


def _frame_rms_db(wav: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """Per-frame RMS in dB relative to the loudest frame; frames are centred (zero padded)."""
    padded = np.pad(wav, (frame // 2, frame // 2))
    n_frames = 1 + (len(padded) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n_frames)[:, None]
    rms = np.sqrt(np.mean(padded[idx] ** 2, axis=1))
    power = rms**2
    ref = max(power.max(), 1e-10)
    return 10.0 * np.log10(np.maximum(power, 1e-10)) - 10.0 * np.log10(ref)


def speech_bounds(wav: np.ndarray, top_db: float = 20.0, frame: int = 512, hop: int = 128) -> tuple[int, int]:
    """[start, end) sample span of the non-silent part (frames within top_db of the loudest)."""
    loud = np.flatnonzero(_frame_rms_db(wav, frame, hop) > -top_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * hop), int(min(len(wav), (loud[-1] + 1) * hop))


def trim_silence(
    wav: torch.Tensor,
    rate: int = TOKENIZER_RATE,
    keep_before_s: float = 0.05,
    keep_after_s: float = 0.22,
    quantum: int = 240,
) -> torch.Tensor:
    """Cut leading/trailing silence, keeping a margin, with the speech length quantized.

    The output length is ceil(speech / quantum) * quantum plus both margins;
    missing margin is filled with zeros.
    """
    x = wav.detach().cpu().numpy().astype(np.float32)
    start, end = speech_bounds(x)
    n_quanta = math.ceil((end - start) / quantum)
    before = int(keep_before_s * rate)
    out_len = int(n_quanta * quantum + (keep_before_s + keep_after_s) * rate)
    first = start - before
    y = x[first:] if first > 0 else np.pad(x, (-first, 0))
    y = y[:out_len] if out_len < len(y) else np.pad(y, (0, out_len - len(y)))
    return torch.from_numpy(np.ascontiguousarray(y))


def encode_audio(samples: torch.Tensor | np.ndarray, rate: int, fmt: str = "wav") -> bytes:
    """Encode mono float samples as WAV (16-bit), FLAC or MP3 bytes."""
    data = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    data = np.clip(data.astype(np.float32).reshape(-1), -1.0, 1.0)
    buf = io.BytesIO()
    fmt = fmt.lower()
    if fmt == "wav":
        sf.write(buf, data, rate, format="WAV", subtype="PCM_16")
    elif fmt == "flac":
        sf.write(buf, data, rate, format="FLAC", subtype="PCM_16")
    elif fmt == "mp3":
        sf.write(buf, data, rate, format="MP3")
    else:
        raise ValueError(f"unsupported output format {fmt!r}; use wav, flac or mp3")
    return buf.getvalue()
