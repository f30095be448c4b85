"""Prompt features for the flow decoder: 24 kHz log-mel and the CAM++ speaker vector.

Both are computed from the untrimmed, peak-limited prompt (UPSTREAM.md §1.3):

* ``prompt_mel``: Matcha/HiFi-GAN style log-mel — reflect-pad (n_fft − hop)/2
  on both sides, STFT without centring (periodic Hann), magnitude
  √(re² + im² + 1e-9), Slaney mel filters (librosa's default, 0–8 kHz), natural
  log with a 1e-5 floor. 80 bins at hop 480 = 50 frames/s; ⌊N/480⌋ frames.
* ``SpeakerEncoder``: Kaldi fbank (80 bins, no dither) on 16 kHz audio, minus
  its mean over time, through the CAM++ ONNX model → (1, 192).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor

from runners.audio import DECODER_RATE, TOKENIZER_RATE, Audio, limit_peak, resample
from runners.models.tokenizers.onnx_runtime import OnnxModel

LOG_FLOOR = 1e-5
MAGNITUDE_EPS = 1e-9
SPEAKER_DIM = 192
KALDI_MIN_SAMPLES = 400  # one 25 ms window at 16 kHz


class MelSettings(Protocol):
    """Any ``mel_conf`` holder with these fields works (ours, or ``runners.models.decoder.config.MelConfig``)."""

    n_fft: int
    num_mels: int
    sampling_rate: int
    hop_size: int
    win_size: int
    fmin: float
    fmax: float | None


@dataclass(frozen=True)
class MelConfig:
    """The ``mel_conf`` numbers of cosyvoice.yaml (official key names in ``from_section``)."""

    n_fft: int = 1920
    num_mels: int = 80
    sampling_rate: int = DECODER_RATE
    hop_size: int = 480
    win_size: int = 1920
    fmin: float = 0.0
    fmax: float | None = 8000.0  # None: half the sampling rate, as librosa takes it

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "MelConfig":
        """Read ``mel_conf``; only the non-centred framing of the official model is supported."""
        if section.get("center", False):
            raise ValueError("mel_conf.center=True is not the official framing; expected False")
        fields = ("n_fft", "num_mels", "sampling_rate", "hop_size", "win_size")
        values: dict[str, Any] = {k: int(section[k]) for k in fields if k in section}
        if "fmin" in section:
            values["fmin"] = float(section["fmin"])
        if "fmax" in section:
            values["fmax"] = None if section["fmax"] is None else float(section["fmax"])
        return cls(**values)

    def frames(self, n_samples: int) -> int:
        """Number of mel frames for ``n_samples`` input samples."""
        return mel_frames(self, n_samples)


def _pad(cfg: MelSettings) -> int:
    return (cfg.n_fft - cfg.hop_size) // 2


def mel_frames(cfg: MelSettings, n_samples: int) -> int:
    """Mel frames for ``n_samples`` samples: ⌊N / hop⌋ with the official numbers."""
    return (n_samples + 2 * _pad(cfg) - cfg.n_fft) // cfg.hop_size + 1


OFFICIAL_MEL = MelConfig()


def _hz_to_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    step = 200.0 / 3.0
    knee_mel = 1000.0 / step
    log_step = math.log(6.4) / 27.0
    mel = hz / step
    high = hz >= 1000.0
    return np.where(high, knee_mel + np.log(np.maximum(hz, 1e-12) / 1000.0) / log_step, mel)


def _slaney_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    step = 200.0 / 3.0
    knee_mel = 1000.0 / step
    log_step = math.log(6.4) / 27.0
    return np.where(mel >= knee_mel, 1000.0 * np.exp(log_step * (mel - knee_mel)), mel * step)


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) triangular filters, area-normalised (Slaney), as librosa builds them by default."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges_hz = _slaney_to_hz(np.linspace(_hz_to_slaney(fmin), _hz_to_slaney(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - fft_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _mel_constants(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, win: int, device: str
) -> tuple[Tensor, Tensor]:
    filters = slaney_mel_filters(sample_rate, n_fft, n_mels, fmin, fmax)
    window = torch.hann_window(win, periodic=True)
    return torch.from_numpy(filters).to(device), window.to(device)


def prompt_mel(samples_24k: Tensor, cfg: MelSettings = OFFICIAL_MEL) -> Tensor:
    """Mono samples (N,) at ``cfg.sampling_rate`` → log-mel (1, ⌊N/hop⌋, num_mels), float32."""
    if samples_24k.dim() != 1:
        raise ValueError(f"prompt_mel expects mono samples (N,), got {tuple(samples_24k.shape)}")
    pad = _pad(cfg)
    if samples_24k.numel() <= pad or mel_frames(cfg, samples_24k.numel()) < 1:
        raise ValueError(
            f"prompt audio too short for a mel frame: {samples_24k.numel()} samples "
            f"(need at least {max(pad + 1, cfg.hop_size)} at {cfg.sampling_rate} Hz)"
        )
    x = samples_24k.float()
    filters, window = _mel_constants(
        cfg.sampling_rate, cfg.n_fft, cfg.num_mels, cfg.fmin, cfg.fmax, cfg.win_size, str(x.device)
    )
    padded = torch.nn.functional.pad(x[None, None], (pad, pad), mode="reflect")[0]
    spec = torch.stft(
        padded, cfg.n_fft, hop_length=cfg.hop_size, win_length=cfg.win_size, window=window,
        center=False, onesided=True, return_complex=True,
    )  # fmt: skip
    magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + MAGNITUDE_EPS)
    mel = torch.matmul(filters, magnitude)  # (1, num_mels, T)
    return torch.log(mel.clamp(min=LOG_FLOOR)).transpose(1, 2).contiguous()


def speaker_fbank(samples_16k: Tensor) -> Tensor:
    """(N,) at 16 kHz → mean-normalised Kaldi fbank (T, 80), as fed to CAM++."""
    if samples_16k.dim() != 1:
        raise ValueError(f"speaker_fbank expects mono samples (N,), got {tuple(samples_16k.shape)}")
    if samples_16k.numel() < KALDI_MIN_SAMPLES:
        raise ValueError(f"prompt audio too short for a speaker embedding: {samples_16k.numel()} samples at 16 kHz")
    feat = kaldi.fbank(samples_16k.float().cpu()[None], num_mel_bins=80, dither=0.0, sample_frequency=TOKENIZER_RATE)
    return feat - feat.mean(dim=0, keepdim=True)


class SpeakerEncoder:
    """CAM++ speaker model (``campplus.onnx``) behind the official feature recipe; thread-safe."""

    def __init__(self, campplus_path: Path, device: torch.device | str = "cpu") -> None:
        self.model = OnnxModel(campplus_path, device)
        self.input_name = self.model.input_names[0]  # the official graph is fed by position

    def __call__(self, samples_16k: Tensor) -> Tensor:
        """(N,) at 16 kHz → (1, 192) float32 on the CPU."""
        feat = speaker_fbank(samples_16k)
        out = self.model.run({self.input_name: feat[None].numpy().astype(np.float32)})[0]
        emb = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).reshape(1, -1)
        if emb.shape[1] != SPEAKER_DIM:
            raise ValueError(f"{self.model.path} gives {emb.shape[1]}-dim embeddings, expected {SPEAKER_DIM}")
        return emb


@dataclass(frozen=True)
class PromptFeatures:
    """What the decoder needs from a prompt: mel (1, T, 80) at 50 Hz and speaker vector (1, 192)."""

    mel: Tensor
    speaker: Tensor


def prompt_features(
    audio: Audio, speaker: SpeakerEncoder, mel_cfg: MelSettings = OFFICIAL_MEL, device: torch.device | str = "cpu"
) -> PromptFeatures:
    """Both features from one prompt; each is resampled from the original rate, as upstream does.

    The 0.6 peak limit is applied here too; it only scales down, so applying it
    after the engine already did changes nothing.
    """
    wav = limit_peak(audio.samples.float())
    wav_mel = resample(wav.to(device), audio.sample_rate, mel_cfg.sampling_rate)
    mel = prompt_mel(wav_mel, mel_cfg)
    wav_spk = resample(wav, audio.sample_rate, TOKENIZER_RATE)
    return PromptFeatures(mel=mel, speaker=speaker(wav_spk).to(mel.device))
