"""Prompt features: 24 kHz log-mel (50 frames/s) and the CAM++ speaker embedding."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchaudio

from runners.audio import Audio
from runners.models.decoder.prompt_features import (
    MelConfig,
    SpeakerEncoder,
    prompt_features,
    prompt_mel,
    slaney_mel_filters,
)
from runners.models.tiny.vocoder import CAMPPLUS_INPUT, write_campplus

PARITY = Path(__file__).resolve().parents[2] / "data" / "parity" / "features_mel.npz"


@pytest.fixture(scope="module")
def campplus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("campplus") / "campplus.onnx"
    write_campplus(path, seed=0)
    return path


@pytest.fixture(scope="module")
def speaker(campplus: Path) -> SpeakerEncoder:
    return SpeakerEncoder(campplus, "cpu")


def _tone(freq: float, seconds: float, rate: int, amp: float = 0.3) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return (amp * torch.sin(2 * math.pi * freq * t)).float()


def test_slaney_filters_match_an_independent_implementation() -> None:
    ours = slaney_mel_filters(24000, 1920, 80, 0.0, 8000.0)
    theirs = torchaudio.functional.melscale_fbanks(961, 0.0, 8000.0, 80, 24000, norm="slaney", mel_scale="slaney")
    assert ours.shape == (80, 961)
    np.testing.assert_allclose(ours, theirs.T.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_samples", [721, 959, 24000, 36000 + 123])
def test_mel_has_80_bins_at_50_frames_per_second(n_samples: int) -> None:
    mel = prompt_mel(torch.randn(n_samples, generator=torch.Generator().manual_seed(0)) * 0.1)
    assert mel.shape == (1, n_samples // 480, 80)
    assert mel.dtype == torch.float32
    assert torch.isfinite(mel).all()


def test_mel_puts_a_tone_in_the_right_band_and_follows_loudness() -> None:
    loud = prompt_mel(_tone(1000.0, 1.0, 24000, amp=0.5))
    quiet = prompt_mel(_tone(1000.0, 1.0, 24000, amp=0.05))
    peak_bins = loud[0].argmax(dim=1)
    centre = slaney_mel_filters(24000, 1920, 80, 0.0, 8000.0)[:, 1000 * 1920 // 24000].argmax()
    assert bool((peak_bins == int(centre)).all())
    # amplitude ×10 is +log(10) in every frame's strongest band
    np.testing.assert_allclose((loud.max(dim=2).values - quiet.max(dim=2).values).numpy(), math.log(10), atol=1e-3)
    silence = prompt_mel(torch.zeros(4800))
    assert float(silence.max()) <= math.log(1e-5) + 1e-3  # the log floor


def test_mel_matches_upstream_reference_numbers() -> None:
    ref = np.load(PARITY)
    mel = prompt_mel(torch.from_numpy(ref["signal_24k"]))
    np.testing.assert_allclose(mel.numpy(), ref["mel_24k"], rtol=0, atol=1e-4)


def test_too_short_audio_is_a_clear_error(speaker: SpeakerEncoder) -> None:
    with pytest.raises(ValueError, match="too short"):
        prompt_mel(torch.zeros(300))
    with pytest.raises(ValueError, match="too short"):
        speaker(torch.zeros(200))
    with pytest.raises(ValueError, match="mono"):
        prompt_mel(torch.zeros(2, 4800))


def test_mel_config_reads_the_official_mel_conf_keys() -> None:
    section = {"n_fft": 1920, "num_mels": 80, "sampling_rate": 24000, "hop_size": 480, "win_size": 1920,
               "fmin": 0, "fmax": 8000, "center": False}  # fmt: skip
    assert MelConfig.from_section(section) == MelConfig()
    with pytest.raises(ValueError, match="center"):
        MelConfig.from_section({**section, "center": True})


def test_tiny_campplus_has_the_official_interface(campplus: Path, tmp_path: Path) -> None:
    session = ort.InferenceSession(str(campplus), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == CAMPPLUS_INPUT and inp.shape[2] == 80 and isinstance(inp.shape[1], str)
    assert out.shape[1] == 192
    for frames in (3, 250):
        feats = np.random.default_rng(0).standard_normal((1, frames, 80)).astype(np.float32)
        assert session.run(None, {inp.name: feats})[0].shape == (1, 192)
    write_campplus(tmp_path / "again.onnx", seed=0)
    assert (tmp_path / "again.onnx").read_bytes() == campplus.read_bytes()


def test_speaker_embedding_is_192_dims_deterministic_and_input_dependent(speaker: SpeakerEncoder) -> None:
    a = speaker(_tone(220.0, 1.0, 16000) + 0.01 * torch.randn(16000, generator=torch.Generator().manual_seed(0)))
    b = speaker(_tone(220.0, 1.0, 16000) + 0.01 * torch.randn(16000, generator=torch.Generator().manual_seed(0)))
    c = speaker(_tone(1760.0, 1.0, 16000))
    assert a.shape == (1, 192) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 1e-2


def test_prompt_features_match_upstream_frontend(speaker: SpeakerEncoder) -> None:
    """22.05 kHz input → upstream's 0.6 peak limit, resampling, mel and CAM++ path (tiny CAM++, seed 0)."""
    ref = np.load(PARITY)
    assert int(ref["campplus_seed"]) == 0
    audio = Audio(torch.from_numpy(ref["signal"]), int(ref["sample_rate"]))
    assert float(audio.samples.abs().max()) > 0.6  # the limit matters for this sample
    feats = prompt_features(audio, speaker)
    assert feats.mel.shape == ref["speech_feat"].shape
    np.testing.assert_allclose(feats.mel.numpy(), ref["speech_feat"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(feats.speaker.numpy(), ref["embedding"], rtol=1e-4, atol=1e-4)


def test_prompt_features_apply_the_peak_limit(speaker: SpeakerEncoder) -> None:
    wav = _tone(300.0, 0.5, 16000, amp=0.8) + 0.1 * torch.randn(8000, generator=torch.Generator().manual_seed(1))
    loud = prompt_features(Audio(wav, 16000), speaker)
    limited = prompt_features(Audio(wav * (0.6 / float(wav.abs().max())), 16000), speaker)
    torch.testing.assert_close(loud.mel, limited.mel, rtol=0, atol=1e-5)
    torch.testing.assert_close(loud.speaker, limited.speaker, rtol=0, atol=1e-5)
    assert loud.mel.shape == (1, 12000 // 480, 80)


def test_prompt_mel_takes_the_decoder_config_mel_settings() -> None:
    """The engine may pass ``runners.models.decoder.config.MelConfig`` (same field names) instead of ours."""
    from runners.models.decoder.config import MelConfig as DecoderMel

    wav = torch.randn(24000, generator=torch.Generator().manual_seed(4)) * 0.1
    torch.testing.assert_close(prompt_mel(wav, DecoderMel()), prompt_mel(wav), rtol=0, atol=0)
    full_band = prompt_mel(wav, MelConfig(fmax=None))
    assert full_band.shape == (1, 50, 80) and not torch.allclose(full_band, prompt_mel(wav))
