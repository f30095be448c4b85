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

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from runners.errors import InvalidInputError

TOKENIZER_RATE = 16000
DECODER_RATE = 24000
PROMPT_PEAK = 0.6  # the prompt is limited to this peak before any feature is taken
TOKENIZER_PEAK = 0.999


class AudioDecodeError(InvalidInputError):
    """The bytes are not audio that can be decoded (or hold no samples)."""


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


def decode_audio(source: bytes | str | os.PathLike[str]) -> Audio:
    """Decode WAV/FLAC/OGG/MP3 (anything libsndfile reads) from bytes or a path."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data, rate = sf.read(io.BytesIO(bytes(source)), dtype="float32", always_2d=True)
        else:
            data, rate = sf.read(Path(source), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioDecodeError(f"not a readable audio file ({exc})", field="audio") from exc
    if data.size == 0:
        raise AudioDecodeError("the audio file holds no samples", field="audio")
    return Audio(to_mono(torch.from_numpy(np.ascontiguousarray(data.T))), int(rate))


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
