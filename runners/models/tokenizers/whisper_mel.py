"""Whisper-style 128-bin log-mel features, the input of the vq06 speech tokenizer.

The official tokenizer feeds ``openai-whisper``'s ``log_mel_spectrogram(audio,
n_mels=128)`` to ``speech_tokenizer_v1.onnx``. This module computes the same
numbers without depending on the whisper package: 400-point Hann STFT with a
160-sample hop (centred, reflect padded), power spectrum, Slaney-style mel
filters (the librosa default that whisper's ``mel_filters.npz`` was built
with), ``log10`` with a 1e-10 floor, an 8-decade dynamic range below the
maximum, and the ``(x + 4) / 4`` scaling. The last STFT frame is dropped, so
N samples give ``N // 160`` frames (100 per second).
"""

from __future__ import annotations

import threading

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 128

_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel below the 1 kHz break
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_F_SP  # 15.0
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(freqs, dtype=np.float64)
    mel = f / _SLANEY_F_SP
    high = f >= _SLANEY_BREAK_HZ
    mel = np.where(high, _SLANEY_BREAK_MEL + np.log(np.maximum(f, 1e-10) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP, mel)
    return mel


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(mels, dtype=np.float64)
    hz = m * _SLANEY_F_SP
    high = m >= _SLANEY_BREAK_MEL
    return np.where(high, _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (m - _SLANEY_BREAK_MEL)), hz)


def mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 triangular filters with Slaney area normalization.

    The rounding order follows librosa (triangles rounded to float32 before the
    float64 normalization factor is applied), so the result equals the filters
    whisper ships in ``mel_filters.npz`` bit for bit.
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    bin_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(np.array(fmin)), hz_to_mel(np.array(fmax)), n_mels + 2))
    widths = np.diff(edges_hz)
    # distance of every FFT bin from every band edge, in Hz
    offsets = edges_hz[:, None] - bin_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    area = 2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels])
    return (triangles.astype(np.float64) * area[:, None]).astype(np.float32)


_FILTER_CACHE: dict[tuple[int, str], torch.Tensor] = {}
_WINDOW_CACHE: dict[str, torch.Tensor] = {}
_CACHE_LOCK = threading.Lock()


def _filters(n_mels: int, device: torch.device) -> torch.Tensor:
    key = (n_mels, str(device))
    with _CACHE_LOCK:
        if key not in _FILTER_CACHE:
            _FILTER_CACHE[key] = torch.from_numpy(mel_filterbank(n_mels=n_mels)).to(device)
        return _FILTER_CACHE[key]


def _window(device: torch.device) -> torch.Tensor:
    key = str(device)
    with _CACHE_LOCK:
        if key not in _WINDOW_CACHE:
            _WINDOW_CACHE[key] = torch.hann_window(N_FFT, device=device)
        return _WINDOW_CACHE[key]


def log_mel_spectrogram(samples: torch.Tensor | np.ndarray, n_mels: int = N_MELS) -> torch.Tensor:
    """16 kHz mono float samples (N,) → (n_mels, N // 160) float32 log-mel features.

    Runs on the samples' device. Needs more than 200 samples (reflect padding).
    """
    audio = torch.as_tensor(samples, dtype=torch.float32)
    if audio.dim() != 1:
        raise ValueError(f"expected mono samples of shape (N,), got {tuple(audio.shape)}")
    if audio.numel() <= N_FFT // 2:
        raise ValueError(f"need more than {N_FFT // 2} samples for a log-mel frame, got {audio.numel()}")
    spec = torch.stft(audio, N_FFT, HOP_LENGTH, window=_window(audio.device), return_complex=True)
    power = spec[..., :-1].abs() ** 2
    mel = _filters(n_mels, audio.device) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0
