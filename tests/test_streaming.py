"""StreamingDecoder on the tiny decoder: schedule, first-piece latency, length, closeness to the whole call.

Closeness is measured three ways (figures from the tiny random model, CPU, see the report in the
module docstring of runners/streaming.py for how the stream is made):
- the flow's mel of the stream against the whole-utterance mel: about 32–37 dB SNR (the missing part
  is what a frame's attention would have seen of tokens that were not generated yet);
- the vocoder alone, fed the whole-utterance mel: the streamed waveform equals the whole-utterance
  waveform to > 60 dB SNR (phase and noise continue across pieces);
- end to end, the spectral distance (32-band log power, dB) of the stream to the whole call is about
  half the distance between two seeds of the whole call. Sample-wise SNR end to end is meaningless
  here: the random vocoder integrates F0 into phase, so a small mel change shifts the phase of
  everything after it.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from runners.streaming import StreamingDecoder
from runners.tiny import random_codec_ids
from runners.token2wav import Token2Wav, time_scale_mel
from runners.tokens import to_frame_pairs


PROMPT = random_codec_ids(100, 1)  # 60 frame pairs
PROMPT_MEL = torch.randn(1, 113, 80, generator=torch.Generator().manual_seed(2))
SPEAKER = torch.randn(1, 192, generator=torch.Generator().manual_seed(3))


def _stream(t2w: Token2Wav, ids: list[int], step: int = 7, **kw) -> tuple[list[np.ndarray], StreamingDecoder]:
    dec = StreamingDecoder(t2w, PROMPT, PROMPT_MEL, SPEAKER, **kw)
    pieces: list[np.ndarray] = []
    for i in range(0, len(ids), step):
        pieces += dec.push(ids[i : i + step])
    pieces += dec.finish()
    return pieces, dec


def _bands_db(x: np.ndarray, n_fft: int = 1024, hop: int = 480, n_bands: int = 32) -> torch.Tensor:
    power = torch.stft(torch.from_numpy(x), n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs() ** 2
    power = power[: n_fft // 2]
    return 10 * torch.log10(power.reshape(n_bands, -1, power.size(-1)).mean(1) + 1e-10)


def _band_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float((_bands_db(a) - _bands_db(b)).abs().mean())


def _snr_db(x: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> float:
    x, ref = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    return float(10 * torch.log10(ref.pow(2).sum() / (x - ref).pow(2).sum().clamp_min(1e-30)))


@pytest.mark.parametrize("n_ids", [23, 30, 250, 253])
def test_stream_has_exactly_the_length_of_the_whole_call(t2w: Token2Wav, n_ids: int) -> None:
    ids = random_codec_ids(n_ids, 4)
    pieces, _ = _stream(t2w, ids, seed=3)
    whole = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=3).waveform
    assert all(p.dtype == np.float32 and p.ndim == 1 and p.size for p in pieces)
    assert sum(p.size for p in pieces) == whole.numel()


def test_first_piece_comes_after_fifteen_frames_plus_lookahead(t2w: Token2Wav) -> None:
    ids = random_codec_ids(200, 5)
    dec = StreamingDecoder(t2w, PROMPT, PROMPT_MEL, SPEAKER, seed=1)
    # 29 ids = 5 whole groups = 15 frame pairs, the lookahead is still missing
    assert dec.push(ids[:29]) == []
    first = dec.push(ids[29:30])  # 30 ids = 18 frame pairs = 15 + 3 lookahead
    assert len(first) == 1 and first[0].size > 0
    # at most 15 frames (0.6 s) of audio: the last open frames wait for the next chunk's cross-fade
    assert first[0].size <= 15 * t2w.samples_per_token_frame
    assert dec.push(ids[30:60]) == []  # next chunk ends at 39 frames (+3): 70 ids
    assert len(dec.push(ids[60:70])) == 1


def test_chunks_follow_the_schedule(t2w: Token2Wav) -> None:
    ids = random_codec_ids(5 * 60, 6)  # 180 frame pairs
    _, dec = _stream(t2w, ids, step=11, seed=2)
    assert [c.frames for c in dec.timings] == [15, 24, 48, 48, 45]  # 15+24+48+48 = 135, then the flush
    assert all(c.flow_seconds > 0 for c in dec.timings)
    _, custom = _stream(t2w, ids, step=11, seed=2, schedule=(30, 60), lookahead=0)
    assert [c.frames for c in custom.timings] == [30, 60, 60, 30]


def test_how_ids_arrive_does_not_change_the_audio(t2w: Token2Wav) -> None:
    ids = random_codec_ids(260, 7)
    one_by_one, _ = _stream(t2w, ids, step=1, seed=4)
    all_at_once, _ = _stream(t2w, ids, step=len(ids), seed=4)
    odd, _ = _stream(t2w, ids, step=13, seed=4)
    a, b, c = (np.concatenate(p) for p in (one_by_one, all_at_once, odd))
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_streams_keep_their_own_state(t2w: Token2Wav) -> None:
    ids_a, ids_b = random_codec_ids(200, 8), random_codec_ids(170, 9)
    alone_a, _ = _stream(t2w, ids_a, step=10, seed=5)
    alone_b, _ = _stream(t2w, ids_b, step=10, seed=6)
    dec_a = StreamingDecoder(t2w, PROMPT, PROMPT_MEL, SPEAKER, seed=5)
    dec_b = StreamingDecoder(t2w, PROMPT, PROMPT_MEL, SPEAKER, seed=6)
    got_a: list[np.ndarray] = []
    got_b: list[np.ndarray] = []
    for i in range(0, 200, 10):  # interleaved
        got_a += dec_a.push(ids_a[i : i + 10])
        got_b += dec_b.push(ids_b[i : i + 10])
    got_a += dec_a.finish()
    got_b += dec_b.finish()
    assert np.array_equal(np.concatenate(got_a), np.concatenate(alone_a))
    assert np.array_equal(np.concatenate(got_b), np.concatenate(alone_b))


def test_streams_in_threads_at_once_match_each_alone(t2w: Token2Wav) -> None:
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(random_codec_ids(120 + 15 * k, 20 + k), k) for k in range(3)]
    # "alone" also runs in a pool thread: torch's intra-op thread count is per thread, and a new
    # thread gets the default, so main-thread numbers could differ in the last bits from any worker's
    with ThreadPoolExecutor(1) as pool:
        alone = list(pool.map(lambda job: np.concatenate(_stream(t2w, job[0], step=5, seed=job[1])[0]), jobs))
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda job: np.concatenate(_stream(t2w, job[0], step=5, seed=job[1])[0]), jobs))
    for a, b in zip(alone, together):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("seed", [4, 5])
def test_stream_is_close_to_the_whole_call_of_the_same_seed(t2w: Token2Wav, seed: int) -> None:
    ids = random_codec_ids(400, seed)  # 240 frame pairs = 9.6 s: five chunks
    pieces, dec = _stream(t2w, ids, seed=seed)
    whole = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=seed)
    other_seed = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=seed + 100).waveform.numpy()
    stream = np.concatenate(pieces)
    ref = whole.waveform.numpy()
    assert stream.shape == ref.shape
    assert _snr_db(dec.mel, whole.mel) > 28.0  # measured 32–37 dB
    near, far = _band_distance(stream, ref), _band_distance(other_seed, ref)
    assert near < 2.6  # measured ≈ 1.8–2.1 dB (vs ≈ 3.6 dB for another seed)
    assert near < 0.75 * far


class _ReferenceFlow:
    """Stands in for the flow: returns the whole-utterance mel of the frames it is asked for."""

    def __init__(self, flow: torch.nn.Module, pairs: torch.Tensor, mel: torch.Tensor) -> None:
        self._flow, self._pairs, self._mel = flow, pairs[0], mel

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._flow, name)

    def inference(self, token: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # type: ignore[no-untyped-def]
        n = token.size(1)
        for start in range(self._pairs.size(0) - n + 1):  # random tokens: the window is found exactly once
            if torch.equal(self._pairs[start : start + n], token[0]):
                return self._mel[:, :, 2 * start : 2 * (start + n)].clone()
        raise AssertionError("window not found")

    def inference_rows(self, rows, *args, **kwargs) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
        """The batched entry the decoder calls: each row's window, as :meth:`inference` finds it."""
        return [self.inference(row.token.unsqueeze(0))[0] for row in rows]


@pytest.mark.parametrize("speed", [1.0, 1.7, 0.6])
def test_vocoding_in_pieces_equals_vocoding_the_whole_mel(t2w: Token2Wav, speed: float) -> None:
    ids = random_codec_ids(300, 10)
    whole_mel = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=2).mel
    whole = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=2, speed=speed)
    exact = copy.copy(t2w)
    exact.flow = _ReferenceFlow(t2w.flow, to_frame_pairs(ids), whole_mel)  # type: ignore[assignment]
    pieces, dec = _stream(exact, ids, seed=2, speed=speed)
    torch.testing.assert_close(dec.mel, whole_mel, atol=1e-5, rtol=0)  # the cross-fade blends two equal versions
    stream = np.concatenate(pieces)
    assert stream.shape == (whole.waveform.numel(),)
    assert _snr_db(stream, whole.waveform) > 60.0  # measured ≈ 68 dB: phase and noise carry over


def test_speed_in_the_stream_matches_the_whole_call(t2w: Token2Wav) -> None:
    ids = random_codec_ids(250, 11)
    for speed in (2.0, 0.5):
        pieces, dec = _stream(t2w, ids, seed=1, speed=speed)
        whole = t2w.synthesize(ids, PROMPT, PROMPT_MEL, SPEAKER, seed=1, speed=speed)
        assert sum(p.size for p in pieces) == whole.waveform.numel()
        assert torch.equal(dec._scaled, time_scale_mel(dec.mel, speed))


def test_misuse_is_reported(t2w: Token2Wav) -> None:
    with pytest.raises(ValueError, match="speed must be between 0.25 and 4.0"):
        StreamingDecoder(t2w, PROMPT, PROMPT_MEL, SPEAKER, speed=5.0)
    with pytest.raises(ValueError, match="80 bins"):
        StreamingDecoder(t2w, PROMPT, torch.randn(1, 10, 64), SPEAKER)
    with pytest.raises(ValueError, match="schedule"):
        StreamingDecoder(t2w, PROMPT, PROMPT_MEL, SPEAKER, schedule=(15, 0))
    dec = StreamingDecoder(t2w, PROMPT, PROMPT_MEL, SPEAKER)
    with pytest.raises(ValueError, match="no audio tokens"):
        dec.finish()
    dec = StreamingDecoder(t2w, PROMPT, PROMPT_MEL, SPEAKER)
    dec.push(random_codec_ids(10, 1))
    assert dec.finish() and dec.finish() == []
    with pytest.raises(RuntimeError, match="after finish"):
        dec.push([1])
