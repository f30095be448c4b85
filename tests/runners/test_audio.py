"""runners.audio: decoding, mono mix, resampling, peak handling and silence trim."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from runners.audio import (
    Audio,
    AudioDecodeError,
    decode_audio,
    limit_peak,
    normalize_peak,
    resample,
    speech_bounds,
    trim_silence,
)
from tests.runners.models.test_audio_tokenizer import speechlike


def _tone(rate: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _burst(seed: int) -> np.ndarray:
    """1 s of a noisy 300 Hz tone inside 2 s of faint noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros(32000, dtype=np.float32)
    x[5000:21000] = (0.5 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000) + 0.05 * rng.standard_normal(16000)).astype(
        np.float32
    )
    x += (0.001 * rng.standard_normal(len(x))).astype(np.float32)
    return x


@pytest.mark.parametrize(
    ("fmt", "subtype", "tolerance"),
    [("WAV", "PCM_16", 1e-4), ("WAV", "FLOAT", 0.0), ("FLAC", "PCM_16", 1e-4), ("OGG", "VORBIS", None), ("MP3", None, None)],
)
def test_decode_common_formats(fmt: str, subtype: str | None, tolerance: float | None) -> None:
    x = _tone(22050, 0.5)
    buf = io.BytesIO()
    sf.write(buf, x, 22050, format=fmt, subtype=subtype)
    audio = decode_audio(buf.getvalue())
    assert audio.sample_rate == 22050
    assert audio.samples.dtype == torch.float32 and audio.samples.dim() == 1
    if tolerance is None:  # lossy codecs: length within a codec frame, similar energy
        assert abs(audio.samples.numel() - len(x)) < 2048
        assert float(audio.samples.pow(2).mean()) == pytest.approx(float((x**2).mean()), rel=0.2)
    else:
        assert audio.samples.numel() == len(x)
        assert float((audio.samples - torch.from_numpy(x)).abs().max()) <= tolerance


def test_decode_from_path(tmp_path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, _tone(16000, 0.25), 16000)
    assert decode_audio(path).duration_s == pytest.approx(0.25)


def test_stereo_is_averaged_to_mono() -> None:
    left, right = _tone(16000, 0.2, 300), _tone(16000, 0.2, 500)
    buf = io.BytesIO()
    sf.write(buf, np.stack([left, right], axis=1), 16000, format="WAV", subtype="FLOAT")
    audio = decode_audio(buf.getvalue())
    assert audio.samples.shape == (len(left),)
    assert torch.allclose(audio.samples, torch.from_numpy((left + right) / 2), atol=1e-6)


@pytest.mark.parametrize("payload", [b"", b"not audio at all", b"RIFF\x00\x00\x00\x00WAVEjunk"])
def test_garbage_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(AudioDecodeError):
        decode_audio(payload)


def test_file_without_samples_is_a_decode_error() -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(0, dtype=np.float32), 16000, format="WAV")
    with pytest.raises(AudioDecodeError, match="no samples"):
        decode_audio(buf.getvalue())


def test_8k_is_resampled_up_with_the_tone_kept() -> None:
    x = torch.from_numpy(_tone(8000, 1.0, freq=440))
    y = Audio(x, 8000).resampled(16000)
    assert y.sample_rate == 16000 and y.samples.numel() == 16000
    spectrum = torch.fft.rfft(y.samples).abs()
    assert int(spectrum.argmax()) == 440  # 1 s → 1 Hz per bin
    assert torch.equal(resample(x, 8000, 8000), x)


def test_peak_limit_and_normalize() -> None:
    loud = torch.tensor([0.0, 0.9, -1.2])
    assert float(limit_peak(loud).abs().max()) == pytest.approx(0.6)
    quiet = torch.tensor([0.0, 0.3, -0.2])
    assert torch.equal(limit_peak(quiet), quiet)  # never scaled up
    assert float(normalize_peak(quiet).abs().max()) == pytest.approx(0.999)
    # near silence is scaled as if its peak were 0.01, not blown up to full scale
    whisper = torch.tensor([0.0, 0.001, -0.0005])
    assert float(normalize_peak(whisper).abs().max()) == pytest.approx(0.0999, rel=1e-5)


def test_encode_roundtrip_wav_and_flac() -> None:
    from api.audio_out import encode

    x = _tone(24000, 0.3)
    for fmt in ("wav", "flac"):
        audio = decode_audio(encode(x, 24000, fmt))
        assert audio.sample_rate == 24000 and audio.samples.numel() == len(x)
    with pytest.raises(ValueError, match="unknown audio format"):
        encode(x, 24000, "aiff")


# Numbers from the official utils.trim_silence (librosa 0.10.2.post1 effects.trim,
# top_db 20, frame 512, hop 128) on the same signals; librosa is not needed here.
TRIM_REFERENCE = {
    "speechlike_lead_tail": {"len": 25440, "first_nonzero": 864, "last_nonzero": 21663, "abs_sum": 2821.262917184049, "bounds": [11136, 32256]},
    "burst": {"len": 20880, "first_nonzero": 0, "last_nonzero": 20879, "abs_sum": 5134.634678578057, "bounds": [4864, 21248]},
    "speechlike_plain": {"len": 18720, "first_nonzero": 800, "last_nonzero": 16799, "abs_sum": 2369.7419719374975, "bounds": [0, 14336]},
    "burst_at_start": {"len": 20880, "first_nonzero": 32, "last_nonzero": 20879, "abs_sum": 5122.178114892368, "bounds": [768, 17280]},
}


def _trim_case(name: str) -> np.ndarray:
    return {
        "speechlike_lead_tail": lambda: speechlike(16000, 1.3, 0.7, 0.9, seed=3),
        "burst": lambda: _burst(5),
        "speechlike_plain": lambda: speechlike(16000, 1.0, seed=4),
        "burst_at_start": lambda: _burst(6)[4000:],
    }[name]()


@pytest.mark.parametrize("name", list(TRIM_REFERENCE))
def test_trim_silence_matches_official_numbers(name: str) -> None:
    ref = TRIM_REFERENCE[name]
    x = _trim_case(name)
    assert list(speech_bounds(x)) == ref["bounds"]
    y = trim_silence(torch.from_numpy(x)).numpy()
    nonzero = np.flatnonzero(y)
    assert len(y) == ref["len"]
    assert (int(nonzero[0]), int(nonzero[-1])) == (ref["first_nonzero"], ref["last_nonzero"])
    assert float(np.abs(y).astype(np.float64).sum()) == pytest.approx(ref["abs_sum"], rel=1e-9)


def test_trim_keeps_margins_and_quantizes() -> None:
    x = _burst(5)
    y = trim_silence(torch.from_numpy(x))
    assert (y.numel() - int(0.27 * 16000)) % 240 == 0
    assert y.dtype == torch.float32
