"""The decoder worker batches token-to-wave work of many requests; each request hears what it hears alone.

Tolerance, measured on the tiny random decoder (CPU, fp32, one thread), batched against alone:
- flow mel: max |Δ| 2.4e-6 … 4.4e-6, SNR ≈ 129–130 dB. Not bit-identical even for equal-length rows
  with no padding at all (3 identical rows: 2.7e-6): the matrix kernels add in another order when the
  batch is larger. Padding itself adds nothing measurable (a row's output with short or long
  batch-mates differs by the same few 1e-6).
- vocoder convolutions on the same mel and source: max |Δ| ≤ 1e-7.
- waveform end to end: max |Δ| 2.2e-5 … 7.4e-5 (peaks ≈ 0.05), SNR 65–72 dB: the flow's few-1e-6 mel
  difference moves F0 by ~1e-4 Hz, and F0 is integrated into the source's phase over the utterance.
- streams (4 at once, every chunk batched 4 wide) against each stream alone: same chunk sizes, max |Δ|
  5.2e-5 … 6.6e-5, SNR 65–71 dB (cross-fade and lookahead unchanged; same cause as above).
- with ``max_batch=1`` the worker runs each job alone: bit-identical.
The bounds below leave about a factor of ten (mel) and 10 dB (waveform) of headroom; a leak of padding
or a row's noise, speaker, prompt or source state into another row is orders of magnitude larger.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from runners.models.decoder.batch import DecodeJob, run_batch
from runners.decoder_worker import STARVE_TICKS, DecoderEvents, DecoderStats, DecoderWorker, _Pending
from runners.errors import EngineUnavailableError, RequestAbortedError
from runners.models.decoder.streaming import StreamingDecoder
from runners.models.tiny import random_codec_ids
from runners.models.decoder.token2wav import Token2Wav

MEL_ATOL = 5e-5  # measured ≤ 4.4e-6
WAVE_SNR_DB = 55.0  # measured 65–72 dB


def _voice(k: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Prompt ids, prompt mel and speaker of voice k (prompts of different lengths)."""
    g = torch.Generator().manual_seed(100 + k)
    n = 50 + 25 * k
    return random_codec_ids(n, 50 + k), torch.randn(1, n * 3 // 5 * 2 + 5, 80, generator=g), torch.randn(1, 192, generator=g)


# (ids, voice, speed, seed): different lengths, speakers, speeds and seeds in one batch
REQUESTS = [(120, 0, 1.0, 3), (250, 1, 1.3, 7), (60, 2, 0.8, 11), (200, 3, 1.0, 5)]


def _snr_db(x: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> float:
    x, ref = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    return float(10 * torch.log10(ref.pow(2).sum() / (x - ref).pow(2).sum().clamp_min(1e-30)))


def _whole_args(i: int) -> tuple[list[int], list[int], torch.Tensor, torch.Tensor, float, int]:
    n, k, speed, seed = REQUESTS[i]
    prompt, mel, spk = _voice(k)
    return random_codec_ids(n, 200 + i), prompt, mel, spk, speed, seed


@pytest.fixture(scope="module")
def alone(t2w: Token2Wav) -> list:  # noqa: ANN201 - list[Token2WavOutput]
    out = []
    for i in range(len(REQUESTS)):
        ids, prompt, mel, spk, speed, seed = _whole_args(i)
        out.append(t2w.synthesize(ids, prompt, mel, spk, seed=seed, speed=speed))
    return out


class Recorder(DecoderEvents):
    def __init__(self) -> None:
        self.batches: list[tuple[int, float]] = []

    def decoder_batch(self, size: int, seconds: float, queue_depth: int) -> None:
        assert queue_depth >= 0
        self.batches.append((size, seconds))


@pytest.fixture
def worker(t2w: Token2Wav):  # noqa: ANN201 - a started DecoderWorker, stopped afterwards
    events = Recorder()
    w = DecoderWorker(t2w, max_batch=16, max_wait_ms=50, events=events).start()
    w.recorder = events  # type: ignore[attr-defined]
    yield w
    w.stop()


def _at_once(calls: list) -> list:  # noqa: ANN001 - callables
    """Run the calls in threads released together; results in order (exceptions returned, not raised)."""
    out: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


# -- numbers ---------------------------------------------------------------------------------------


def test_a_batch_of_whole_decodes_gives_each_request_its_alone_mel_and_wave(t2w: Token2Wav, alone: list) -> None:
    jobs = []
    for i in range(len(REQUESTS)):
        ids, prompt, mel, spk, speed, seed = _whole_args(i)
        jobs.append(t2w.job(ids, prompt, mel, spk, seed=seed, speed=speed))
    assert run_batch(t2w, jobs) == [None] * len(jobs)
    for job, ref in zip(jobs, alone):
        out = job.output()
        assert out.waveform.shape == ref.waveform.shape
        torch.testing.assert_close(out.mel, ref.mel, atol=MEL_ATOL, rtol=0)
        assert _snr_db(out.waveform, ref.waveform) > WAVE_SNR_DB
    # and the requests really differ, so a swapped row could not pass
    assert _snr_db(jobs[0].output().mel[:, :, :100], alone[3].mel[:, :, :100]) < 10


def test_padding_never_leaks_a_rows_output_ignores_its_batch_mates(t2w: Token2Wav, alone: list) -> None:
    rows = []
    for i in range(len(REQUESTS)):
        ids, prompt, mel, spk, speed, seed = _whole_args(i)
        rows.append(t2w.job(ids, prompt, mel, spk, seed=seed).flow)
    short, long_ = rows[2], rows[1]  # 60 and 250 ids (+ prompts)
    with torch.inference_mode():
        lone = t2w.flow.inference_rows([rows[0]])[0]
        with_short = t2w.flow.inference_rows([rows[0], short, short])[0]
        with_long = t2w.flow.inference_rows([rows[0], long_, long_])[0]  # row 0 is padded here
        for got in (with_short, with_long):
            assert got.shape == lone.shape
            torch.testing.assert_close(got, lone, atol=MEL_ATOL, rtol=0)
            # the last frames are where right padding would leak in
            torch.testing.assert_close(got[:, -8:], lone[:, -8:], atol=MEL_ATOL, rtol=0)

        hift = t2w.hift
        mels = [a.mel[0] for a in alone]
        sources = [hift.m_source(hift.f0_rows([m])[0].unsqueeze(0), torch.Generator().manual_seed(1))[0] for m in mels]
        lone_wave = hift.decode_rows([mels[2]], [sources[2]])[0]
        padded_wave = hift.decode_rows([mels[2], mels[1]], [sources[2], sources[1]])[0]  # 2 is the shortest
        assert padded_wave.shape == lone_wave.shape
        torch.testing.assert_close(padded_wave, lone_wave, atol=1e-5, rtol=0)  # measured ≤ 1e-7
        lone_f0 = hift.f0_rows([mels[2]])[0]
        torch.testing.assert_close(hift.f0_rows([mels[2], mels[1]])[0], lone_f0, atol=1e-3, rtol=1e-6)


def test_concurrent_whole_decodes_through_the_worker_each_get_their_own_audio(worker: DecoderWorker, alone: list) -> None:
    calls = []
    for i in range(len(REQUESTS)):
        ids, prompt, mel, spk, speed, seed = _whole_args(i)
        calls.append(lambda ids=ids, p=prompt, m=mel, s=spk, sp=speed, sd=seed: worker.synthesize(ids, p, m, s, seed=sd, speed=sp))
    results = _at_once(calls)
    for (samples, stages), ref in zip(results, alone):
        assert samples.dtype == np.float32 and samples.shape == (ref.waveform.numel(),)
        assert _snr_db(samples, ref.waveform) > WAVE_SNR_DB
        assert stages["flow"] > 0 and stages["vocoder"] > 0
    stats = worker.stats()
    assert stats.jobs_done == len(REQUESTS) and stats.queue_depth == 0
    assert max(stats.batch_sizes) > 1, "the requests were never batched"


def _stream_alone(t2w: Token2Wav, i: int, ids: list[int], step: int) -> list[np.ndarray]:
    _, k, speed, seed = REQUESTS[i]
    prompt, mel, spk = _voice(k)
    dec = StreamingDecoder(t2w, prompt, mel, spk, seed=seed, speed=speed)
    pieces: list[np.ndarray] = []
    for a in range(0, len(ids), step):
        pieces += dec.push(ids[a : a + step])
    return pieces + dec.finish()


def _stream_worker(worker: DecoderWorker, i: int, ids: list[int], step: int) -> list[np.ndarray]:
    _, k, speed, seed = REQUESTS[i]
    prompt, mel, spk = _voice(k)
    session = worker.stream(prompt, mel, spk, seed=seed, speed=speed)
    pieces: list[np.ndarray] = []
    for a in range(0, len(ids), step):
        pieces += session.push(ids[a : a + step])
    return pieces + session.finish()


def test_concurrent_streams_through_the_worker_match_each_stream_alone(worker: DecoderWorker, t2w: Token2Wav) -> None:
    ids = [random_codec_ids(230 + 20 * i, 300 + i) for i in range(len(REQUESTS))]
    refs = [_stream_alone(t2w, i, ids[i], 10) for i in range(len(REQUESTS))]
    got = _at_once([lambda i=i: _stream_worker(worker, i, ids[i], 10) for i in range(len(REQUESTS))])
    for pieces, ref in zip(got, refs):
        assert [p.size for p in pieces] == [p.size for p in ref]  # same chunks: cross-fade and lookahead kept
        assert _snr_db(np.concatenate(pieces), np.concatenate(ref)) > WAVE_SNR_DB
    assert _snr_db(np.concatenate(got[0])[:20000], np.concatenate(refs[1])[:20000]) < 10
    stats = worker.stats()
    assert max(stats.batch_sizes) > 1, "the chunks were never batched"
    assert stats.streams_open == 0 and stats.queue_depth == 0


def test_whole_and_streamed_requests_mix_in_many_threads(worker: DecoderWorker, t2w: Token2Wav, alone: list) -> None:
    ids = [random_codec_ids(160, 400 + i) for i in range(len(REQUESTS))]
    stream_refs = [_stream_alone(t2w, i, ids[i], 15) for i in range(len(REQUESTS))]
    calls = []
    for i in range(len(REQUESTS)):
        a, prompt, mel, spk, speed, seed = _whole_args(i)
        calls.append(lambda a=a, p=prompt, m=mel, s=spk, sp=speed, sd=seed: worker.synthesize(a, p, m, s, seed=sd, speed=sp)[0])
        calls.append(lambda i=i: np.concatenate(_stream_worker(worker, i, ids[i], 15)))
    results = _at_once(calls * 2)  # 16 threads
    for n, got in enumerate(results):
        i = (n % len(calls)) // 2
        ref = alone[i].waveform if n % 2 == 0 else np.concatenate(stream_refs[i])
        assert not isinstance(got, BaseException), got
        assert got.shape == tuple(ref.shape) and _snr_db(got, ref) > WAVE_SNR_DB


def test_max_batch_one_runs_jobs_one_at_a_time_bit_identical_to_alone(t2w: Token2Wav, alone: list) -> None:
    w = DecoderWorker(t2w, max_batch=1).start()
    try:
        calls = []
        for i in range(len(REQUESTS)):
            ids, prompt, mel, spk, speed, seed = _whole_args(i)
            calls.append(lambda ids=ids, p=prompt, m=mel, s=spk, sp=speed, sd=seed: w.synthesize(ids, p, m, s, seed=sd, speed=sp)[0])
        for got, ref in zip(_at_once(calls), alone):
            np.testing.assert_array_equal(got, ref.waveform.numpy())
        assert w.stats().batch_sizes == {1: len(REQUESTS)}
    finally:
        w.stop()


# -- cancellation and faults -----------------------------------------------------------------------


class _Blocker(DecodeJob):
    """Occupies the worker until released (a long batch in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def take_mel(self, mel: torch.Tensor | None) -> None:
        self.started.set()
        assert self.release.wait(30)

    def f0_mel(self) -> torch.Tensor | None:
        return None

    def vocoder_row(self, f0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise AssertionError

    def take_wave(self, wave: torch.Tensor | None) -> None:
        return None


def _occupy(w: DecoderWorker) -> _Blocker:
    blocker = _Blocker()
    threading.Thread(target=lambda: w._wait(w._submit(blocker, None), None), daemon=True).start()
    assert blocker.started.wait(10)
    return blocker


def _until(predicate, timeout: float = 10.0) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_closing_a_stream_drops_its_pending_job_and_the_waiting_push_is_aborted(t2w: Token2Wav) -> None:
    w = DecoderWorker(t2w, max_batch=1).start()
    try:
        blocker = _occupy(w)
        prompt, mel, spk = _voice(0)
        session = w.stream(prompt, mel, spk, seed=1)
        outcome: list[object] = []
        pusher = threading.Thread(target=lambda: outcome.append(_catch(lambda: session.push(random_codec_ids(60, 1)))))
        pusher.start()
        _until(lambda: w.stats().queue_depth == 1)  # its first chunk waits behind the blocker
        session.close()
        pusher.join(10)
        assert isinstance(outcome[0], RequestAbortedError)
        stats = w.stats()
        assert stats.queue_depth == 0 and stats.jobs_dropped == 1 and stats.streams_open == 0
        blocker.release.set()
        _until(lambda: w.stats().jobs_done == 1)
        time.sleep(0.05)
        assert w.stats().jobs_done == 1  # the dropped chunk never ran
        with pytest.raises(RequestAbortedError):
            session.push(random_codec_ids(5, 2))
    finally:
        w.stop()


def test_a_cancelled_whole_decode_returns_at_once_and_its_job_is_dropped(t2w: Token2Wav) -> None:
    w = DecoderWorker(t2w, max_batch=1).start()
    try:
        blocker = _occupy(w)
        ids, prompt, mel, spk, speed, seed = _whole_args(0)
        cancel = threading.Event()
        outcome: list[object] = []
        t = threading.Thread(target=lambda: outcome.append(_catch(lambda: w.synthesize(ids, prompt, mel, spk, seed, speed, cancel))))
        t.start()
        _until(lambda: w.stats().queue_depth == 1)
        cancel.set()
        t.join(5)
        assert isinstance(outcome[0], RequestAbortedError)
        assert w.stats().queue_depth == 0 and w.stats().jobs_dropped == 1
        blocker.release.set()
    finally:
        w.stop()


def _catch(fn):  # noqa: ANN001, ANN202
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001
        return exc


def test_a_row_that_breaks_the_batched_call_fails_alone_and_its_batch_mates_get_their_audio(
    t2w: Token2Wav, alone: list
) -> None:
    jobs = []
    for i in range(3):
        ids, prompt, mel, spk, speed, seed = _whole_args(i)
        jobs.append(t2w.job(ids, prompt, mel, spk, seed=seed, speed=speed))
    bad_ids, prompt, mel, spk, _, _ = _whole_args(3)
    jobs.insert(1, t2w.job(list(bad_ids[:7]) + [99_999] + list(bad_ids[8:]), prompt, mel, spk, seed=1))
    errors = run_batch(t2w, jobs)  # the batched flow call raises; the rows are retried one by one
    assert errors[0] is None and errors[2] is None and errors[3] is None
    assert isinstance(errors[1], IndexError)
    for job, ref in zip(jobs[:1] + jobs[2:], alone[:3]):
        assert _snr_db(job.output().waveform, ref.waveform) > WAVE_SNR_DB


def test_a_failing_job_fails_only_its_own_request(worker: DecoderWorker, alone: list) -> None:
    calls = []
    for i in range(3):
        ids, prompt, mel, spk, speed, seed = _whole_args(i)
        calls.append(lambda ids=ids, p=prompt, m=mel, s=spk, sp=speed, sd=seed: worker.synthesize(ids, p, m, s, seed=sd, speed=sp)[0])
    bad_ids, prompt, mel, spk, _, _ = _whole_args(3)
    bad_ids = list(bad_ids)
    bad_ids[7] = 99_999  # outside the decoder's codebook: the flow's embedding raises for this row only
    calls.insert(1, lambda: worker.synthesize(bad_ids, prompt, mel, spk, seed=1))
    results = _at_once(calls)
    assert isinstance(results[1], IndexError)
    for got, ref in zip(results[:1] + results[2:], alone[:3]):
        assert isinstance(got, np.ndarray) and _snr_db(got, ref.waveform) > WAVE_SNR_DB
    assert worker.stats().jobs_failed == 1
    assert max(size for size, _ in worker.recorder.batches) > 1  # type: ignore[attr-defined]
    ids, prompt, mel, spk, speed, seed = _whole_args(2)
    assert _snr_db(worker.synthesize(ids, prompt, mel, spk, seed=seed, speed=speed)[0], alone[2].waveform) > WAVE_SNR_DB


# -- scheduling policy (fake jobs, no model) -------------------------------------------------------


class _Fake(DecodeJob):
    def __init__(self, name: str, first: bool) -> None:
        super().__init__()
        self.name, self.first = name, first

    def take_mel(self, mel: torch.Tensor | None) -> None: ...

    def f0_mel(self) -> torch.Tensor | None:
        return None

    def vocoder_row(self, f0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise AssertionError

    def take_wave(self, wave: torch.Tensor | None) -> None: ...


def test_first_chunks_go_first_and_later_chunks_do_not_starve(t2w: Token2Wav) -> None:
    w = DecoderWorker(t2w, max_batch=2, max_wait_ms=0)  # not started: the policy alone
    seq = iter(range(1000))

    def queue(name: str, first: bool) -> None:
        w._pending.append(_Pending(_Fake(name, first), None, next(seq), time.perf_counter()))

    queue("later-a", False)
    queue("later-b", False)
    queue("first-a", True)
    queue("first-b", True)
    assert [p.job.name for p in w._take()] == ["first-a", "first-b"]  # type: ignore[union-attr, attr-defined]
    # new first chunks keep arriving; the later ones are promoted after STARVE_TICKS passes
    served: list[str] = []
    for tick in range(STARVE_TICKS + 2):
        queue(f"first-{tick}x", True)
        queue(f"first-{tick}y", True)
        served += [p.job.name for p in w._take()]  # type: ignore[union-attr, attr-defined]
    assert "later-a" in served and "later-b" in served


class _Long(_Fake):
    def __init__(self, name: str, frames: int) -> None:
        super().__init__(name, False)
        self._frames = frames

    @property
    def frames(self) -> int:
        return self._frames


def test_a_batch_holds_no_more_padded_frames_than_its_budget(t2w: Token2Wav) -> None:
    """On a CPU a batch of long rows (25 s pieces over 25 s prompts) ran slower than its rows one by one."""
    w = DecoderWorker(t2w, max_batch=16, max_wait_ms=0, max_frames=3000)  # not started: the policy alone
    seq = iter(range(1000))

    def take(*frames: int) -> list[str]:
        for i, n in enumerate(frames):
            w._pending.append(_Pending(_Long(f"{n}-{i}", n), None, next(seq), time.perf_counter()))
        return [p.job.name for p in w._take()]  # type: ignore[union-attr, attr-defined]

    assert take(1250, 1250, 1250, 1250) == ["1250-0", "1250-1"]  # 2 × 1250 fit, a third would pad to 3750
    assert take() == ["1250-2", "1250-3"]
    assert len(take(*[400] * 10)) == 7  # 7 × 400 = 2800
    w._pending.clear()
    assert take(5000, 100) == ["5000-0"]  # a row over the budget still goes, alone
    assert take() == ["100-1"]
    unlimited = DecoderWorker(t2w, max_batch=16, max_wait_ms=0)
    for i in range(4):
        unlimited._pending.append(_Pending(_Long(str(i), 1250), None, i, time.perf_counter()))
    assert len(unlimited._take()) == 4  # type: ignore[arg-type]


def test_stats_and_events_report_batches(worker: DecoderWorker, t2w: Token2Wav) -> None:
    ids, prompt, mel, spk, speed, seed = _whole_args(2)
    _at_once([lambda sd=sd: worker.synthesize(ids, prompt, mel, spk, seed=sd) for sd in range(3)])
    stats = worker.stats()
    assert isinstance(stats, DecoderStats) and stats.running and stats.max_batch == 16
    events = worker.recorder.batches  # type: ignore[attr-defined]
    assert sum(size for size, _ in events) == stats.jobs_done == 3
    assert all(seconds > 0 for _, seconds in events)
    assert stats.batches == len(events) and sum(stats.batch_sizes.values()) == len(events)
    assert set(stats.batch_sizes) <= set(range(1, 17))
    assert DecoderStats.model_validate_json(stats.model_dump_json()) == stats


def test_a_stopped_worker_refuses_work(t2w: Token2Wav) -> None:
    w = DecoderWorker(t2w).start()
    w.stop()
    ids, prompt, mel, spk, speed, seed = _whole_args(2)
    with pytest.raises(EngineUnavailableError):
        w.synthesize(ids, prompt, mel, spk, seed=seed)
    with pytest.raises(EngineUnavailableError):
        w.stream(prompt, mel, spk)
    assert not w.stats().running
