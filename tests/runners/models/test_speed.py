"""speed: time-scaling the decoder's mel before the vocoder changes the duration, not the pitch."""

from __future__ import annotations

import math

import pytest
import torch

from runners.models.tiny import random_codec_ids
from runners.models.decoder.token2wav import Token2Wav, check_speed, scaled_length, time_scale_mel


PROMPT = random_codec_ids(40, 1)
PROMPT_MEL = torch.randn(1, 50, 80, generator=torch.Generator().manual_seed(2))
SPEAKER = torch.randn(1, 192, generator=torch.Generator().manual_seed(3))


def test_speed_two_halves_and_speed_half_doubles_the_duration(t2w: Token2Wav) -> None:
    ids = random_codec_ids(250, 4)  # 150 frame pairs = 6 s
    normal = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=5)
    fast = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=5, speed=2.0)
    slow = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=5, speed=0.5)
    n = normal.waveform.numel()
    assert n == 6 * 24000
    assert fast.waveform.numel() == n // 2 and slow.waveform.numel() == 2 * n
    assert fast.duration_s == pytest.approx(3.0) and slow.duration_s == pytest.approx(12.0)
    assert fast.waveform.numel() == fast.mel.size(-1) * 480  # the returned mel is the one vocoded
    for out in (fast, slow):
        assert torch.isfinite(out.waveform).all() and out.waveform.abs().max() > 0


def test_odd_lengths_round_to_the_nearest_frame(t2w: Token2Wav) -> None:
    ids = random_codec_ids(20, 6)  # 12 frame pairs = 24 mel frames
    for speed, frames in ((1.5, 16), (3.0, 8), (4.0, 6), (0.25, 96), (0.7, 34)):
        out = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=1, speed=speed)
        assert out.mel.size(-1) == frames == scaled_length(24, speed)
        assert out.waveform.numel() == frames * 480


def test_speed_one_is_the_untouched_path(t2w: Token2Wav) -> None:
    ids = random_codec_ids(60, 7)
    default = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=2)
    explicit = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=2, speed=1.0)
    assert torch.equal(default.waveform, explicit.waveform) and torch.equal(default.mel, explicit.mel)
    assert torch.equal(t2w(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=2, speed=1.0), default.waveform)


def test_time_scaling_interpolates_frames_linearly() -> None:
    mel = torch.arange(10, dtype=torch.float32).view(1, 1, 10).repeat(1, 3, 1)
    fast = time_scale_mel(mel, 2.0)  # output j reads input (j + 0.5)·2 − 0.5 = 2j + 0.5
    torch.testing.assert_close(fast[0, 0], torch.tensor([0.5, 2.5, 4.5, 6.5, 8.5]))
    slow = time_scale_mel(mel, 0.5)  # reads (j + 0.5)/2 − 0.5: the ends are held, the middle interpolated
    assert slow.size(-1) == 20
    torch.testing.assert_close(slow[0, 0, :4], torch.tensor([0.0, 0.25, 0.75, 1.25]))
    assert slow[0, 0, -1] == 9.0
    assert torch.equal(fast[0, 0], fast[0, 2])  # every bin is moved the same way


def test_pitch_stays_while_the_duration_changes(t2w: Token2Wav) -> None:
    """The vocoder renders the F0 its predictor reads off each mel frame; time-scaling keeps each
    frame's spectrum, so the median F0 of the voiced frames stays (a resampled waveform would move
    it by the speed factor). The tiny random vocoder's waveform is too noise-like for a robust
    dominant-frequency estimate, so the check reads the vocoder's own F0."""
    ids = random_codec_ids(600, 1)  # 14.4 s
    medians = {}
    for speed in (1.0, 2.0, 0.5):
        mel = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=1, speed=speed).mel
        with torch.inference_mode():
            f0 = t2w.hift.f0_predictor(mel)[0]
        medians[speed] = float(f0[f0 > t2w.hift.m_source.threshold].median())
    for speed in (2.0, 0.5):
        assert abs(math.log(medians[speed] / medians[1.0])) < math.log(1.15), medians  # measured within 5 %


@pytest.mark.parametrize("bad", [0.0, 0.2, 4.01, 10, -1.0, float("nan"), float("inf")])
def test_out_of_range_speed_is_a_clear_value_error(t2w: Token2Wav, bad: float) -> None:
    with pytest.raises(ValueError, match=r"speed must be between 0.25 and 4.0"):
        t2w.synthesize(random_codec_ids(10, 1), PROMPT, PROMPT_MEL, SPEAKER, speed=bad)


def test_the_range_ends_are_allowed() -> None:
    assert check_speed(0.25) == 0.25 and check_speed(4) == 4.0
