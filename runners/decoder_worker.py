"""The decoder worker: one thread per device that owns the flow and the vocoder and batches requests.

Why: the LLM decodes every running request in one batch, but token-to-wave ran per request under one
lock, so concurrent requests queued behind each other's flow (10 Euler steps × 2 guidance rows) and
vocoder calls. Here request threads hand the worker :class:`~runners.models.decoder.batch.DecodeJob` s (a
whole utterance, or one chunk of a stream) and wait on a future; each tick the worker takes what is
pending (up to ``max_batch``, waiting at most ``max_wait_ms`` after the oldest job arrived, so a lone
request is barely delayed) and runs them with :func:`~runners.models.decoder.batch.run_batch`: the flow of
all of them as one padded batch (guidance rows too), the vocoder as one padded batch.

Scheduling: a stream's first chunk goes before later chunks of other streams (first audio is what a
listener waits for); a job passed over ``STARVE_TICKS`` times is promoted, so nothing starves. Jobs
whose flow windows differ a lot in length are not put in one batch (at least ``MIN_FILL`` of the
padded frames must be real), nor more padded frames than ``max_frames`` (on a CPU a batch of long rows,
each a long prompt plus its output, ran slower than its rows one by one); the head job always goes.

Numbers: a job carries all of its request's state (noise at absolute frame positions, speaker, prompt
mel, vocoder source phase and noise), and padding never reaches a row's real frames (see
``CausalMaskedDiffWithXvec.inference_rows`` and ``HiFTGenerator.decode_rows``), so a seeded request
sounds the same batched or alone (tests/runners/test_decoder_worker.py measures how close).

Faults and cancellation: an exception in one job fails that request's future only (a batched call
that raises is retried row by row); a cancelled request's pending jobs are dropped before they run.

The worker reports through a typed :class:`DecoderStats` (``stats()``) and :class:`DecoderEvents`
(``decoder_batch(size, seconds, queue_depth)``), which the service turns into /status and /metrics.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, Field

from runners.models.decoder.batch import DecodeJob, run_batch
from runners.errors import EngineUnavailableError, RequestAbortedError
from runners.models.decoder.streaming import ChunkTiming, StreamingDecoder
from runners.models.decoder.token2wav import Token2Wav

log = logging.getLogger("editx.decoder")

DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAIT_MS = 5.0
MIN_FILL = 0.5  # at least half of a batch's padded flow frames must be real frames
STARVE_TICKS = 4  # a job passed over this many times is served like a first chunk
_CANCEL_POLL_S = 0.02


class DecoderEvents:
    """What the worker reports as it works; the service turns it into metrics (these do nothing)."""

    def decoder_batch(self, size: int, seconds: float, queue_depth: int) -> None:
        """A batch of ``size`` jobs ran in ``seconds``; ``queue_depth`` jobs wait after it."""


class DecoderStats(BaseModel):
    """The worker's state for /status and /metrics; every label set is bounded (sizes ≤ max_batch)."""

    running: bool
    max_batch: int
    max_wait_ms: float
    max_frames: int = Field(0, description="most padded flow frames in one batch (0: no limit)")
    queue_depth: int = Field(description="jobs waiting for a batch")
    streams_open: int = Field(description="streamed requests with a session open")
    batches: int = Field(description="batches run since start")
    jobs_done: int
    jobs_failed: int
    jobs_dropped: int = Field(description="jobs of cancelled requests removed before they ran")
    last_batch_size: int
    last_batch_seconds: float
    mean_batch_size: float
    mean_batch_seconds: float
    batch_sizes: dict[int, int] = Field(description="batches per size, sizes 1..max_batch")

    @classmethod
    def idle(cls, max_batch: int) -> "DecoderStats":
        """The figures of a worker that is not running (the model is not loaded)."""
        return cls(running=False, max_batch=max_batch, max_wait_ms=DEFAULT_MAX_WAIT_MS, queue_depth=0,
                   streams_open=0, batches=0, jobs_done=0, jobs_failed=0, jobs_dropped=0, last_batch_size=0,
                   last_batch_seconds=0.0, mean_batch_size=0.0, mean_batch_seconds=0.0, batch_sizes={})


@dataclass(eq=False)
class _Pending:
    job: DecodeJob
    owner: object | None
    seq: int
    enqueued: float
    future: Future[None] = field(default_factory=Future)
    passed_over: int = 0

    @property
    def urgent(self) -> bool:
        return self.job.first or self.passed_over >= STARVE_TICKS


class DecoderWorker:
    """Batches the token-to-wave work of every request on one device (see the module docstring).

    Thread-safe: any number of request threads may call :meth:`synthesize` and use sessions from
    :meth:`stream` at once. With ``max_batch=1`` it runs one job at a time, like the old lock.
    """

    def __init__(
        self,
        token2wav: Token2Wav,
        max_batch: int | None = None,
        max_wait_ms: float | None = None,
        events: DecoderEvents | None = None,
        max_frames: int = 0,
    ) -> None:
        self.t2w = token2wav
        self.max_batch = DEFAULT_MAX_BATCH if max_batch is None else int(max_batch)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
        self.max_frames = int(max_frames)  # padded flow frames of one batch (rows × longest); 0 = no limit
        if self.max_frames < 0:
            raise ValueError(f"max_frames must be ≥ 0, got {max_frames}")
        self.max_wait_s = (DEFAULT_MAX_WAIT_MS if max_wait_ms is None else float(max_wait_ms)) / 1000.0
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_ms must be ≥ 0, got {max_wait_ms}")
        self.events = events or DecoderEvents()
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._streams_open = 0
        self._batches = 0
        self._jobs_done = 0
        self._jobs_failed = 0
        self._jobs_dropped = 0
        self._last = (0, 0.0)
        self._total_size = 0
        self._total_seconds = 0.0
        self._sizes: dict[int, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> "DecoderWorker":
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stopping = False
            # torch's intra-op thread count is per thread: the worker uses its creator's, so a decode gives the
            # same numbers in the worker as in the thread that would have run it
            self._torch_threads = torch.get_num_threads()
            self._thread = threading.Thread(target=self._loop, name="editx-decoder", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish the batch in flight, fail what is still queued (the service is going away), end the thread."""
        with self._cond:
            self._stopping = True
            left, self._pending = self._pending, []
            self._cond.notify_all()
            thread = self._thread
        for p in left:
            if p.future.set_running_or_notify_cancel():
                p.future.set_exception(EngineUnavailableError("the decoder stopped"))
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    # -- requests ----------------------------------------------------------------------------------

    def synthesize(
        self,
        codec_ids: Sequence[int],
        prompt_codec_ids: Sequence[int],
        prompt_mel: torch.Tensor,
        speaker: torch.Tensor,
        seed: int | None = None,
        speed: float = 1.0,
        cancel: threading.Event | None = None,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Whole-utterance decode, batched with whatever else is pending; blocks until done.

        Returns (float32 samples, {"flow": s, "vocoder": s}) with the seconds of the batches it was in.
        Raises RequestAbortedError as soon as ``cancel`` is set (its job is dropped if not yet running).
        """
        job = self.t2w.job(codec_ids, prompt_codec_ids, prompt_mel, speaker, seed=seed, speed=speed)
        self._wait(self._submit(job, None), cancel)
        out = job.output()
        return out.waveform.numpy().astype(np.float32, copy=False).reshape(-1), {
            "flow": out.flow_seconds,
            "vocoder": out.vocoder_seconds,
        }

    def stream(
        self,
        prompt_codec_ids: Sequence[int],
        prompt_mel: torch.Tensor,
        speaker: torch.Tensor,
        seed: int | None = None,
        speed: float = 1.0,
        **options: object,
    ) -> "DecoderSession":
        """A streamed decode whose chunks are batched by this worker; ``options`` go to StreamingDecoder."""
        if not self.running:
            raise EngineUnavailableError("the decoder worker is not running")
        return DecoderSession(self, prompt_codec_ids, prompt_mel, speaker, seed, speed, options)

    def stats(self) -> DecoderStats:
        """A snapshot of the worker's state and counters."""
        with self._cond:
            n = max(1, self._batches)
            return DecoderStats(
                running=self.running,
                max_batch=self.max_batch,
                max_wait_ms=self.max_wait_s * 1000.0,
                max_frames=self.max_frames,
                queue_depth=len(self._pending),
                streams_open=self._streams_open,
                batches=self._batches,
                jobs_done=self._jobs_done,
                jobs_failed=self._jobs_failed,
                jobs_dropped=self._jobs_dropped,
                last_batch_size=self._last[0],
                last_batch_seconds=self._last[1],
                mean_batch_size=self._total_size / n,
                mean_batch_seconds=self._total_seconds / n,
                batch_sizes=dict(sorted(self._sizes.items())),
            )

    # -- queue -------------------------------------------------------------------------------------

    def _submit(self, job: DecodeJob, owner: object | None) -> _Pending:
        with self._cond:
            if not self.running:
                raise EngineUnavailableError("the decoder worker is not running")
            p = _Pending(job, owner, next(self._seq), time.perf_counter())
            self._pending.append(p)
            self._cond.notify_all()
            return p

    def _wait(self, p: _Pending, cancel: threading.Event | None) -> None:
        """Block until the job ran; its own exception is raised here, a drop becomes RequestAbortedError."""
        try:
            if cancel is None:
                p.future.result()
                return
            while True:
                try:
                    p.future.result(timeout=_CANCEL_POLL_S)
                    return
                except TimeoutError:
                    if cancel.is_set():
                        self._drop([p])
                        raise RequestAbortedError("the request was cancelled") from None
        except CancelledError:
            raise RequestAbortedError("the request was cancelled") from None

    def _drop(self, pending: Sequence[_Pending]) -> None:
        """Remove jobs that have not started; a job already in a batch finishes and is ignored."""
        with self._cond:
            for p in pending:
                if p in self._pending:
                    self._pending.remove(p)
                    self._jobs_dropped += 1
                p.future.cancel()

    def _drop_owner(self, owner: object) -> None:
        with self._cond:
            mine = [p for p in self._pending if p.owner is owner]
        self._drop(mine)

    def _take(self) -> list[_Pending] | None:
        """The next batch (None when stopping): urgent jobs first, then by arrival; similar lengths only."""
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            deadline = min(p.enqueued for p in self._pending) + self.max_wait_s
            while len(self._pending) < self.max_batch and not self._stopping:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._stopping or not self._pending:
                return None if self._stopping else []
            order = sorted(self._pending, key=lambda p: (not p.urgent, p.seq))
            batch = [order[0]]
            longest = total = max(1, order[0].job.frames)
            for p in order[1:]:
                if len(batch) == self.max_batch:
                    break
                frames = max(1, p.job.frames)
                padded = (len(batch) + 1) * max(longest, frames)
                if self.max_frames and padded > self.max_frames:
                    continue
                if total + frames >= MIN_FILL * padded:
                    batch.append(p)
                    longest, total = max(longest, frames), total + frames
            taken = set(map(id, batch))
            self._pending = [p for p in self._pending if id(p) not in taken]
            for p in self._pending:
                p.passed_over += 1
        return [p for p in batch if p.future.set_running_or_notify_cancel()]

    def _loop(self) -> None:
        torch.set_num_threads(self._torch_threads)
        with torch.inference_mode():
            while True:
                batch = self._take()
                if batch is None:
                    return
                if not batch:
                    continue
                tic = time.perf_counter()
                try:
                    errors = run_batch(self.t2w, [p.job for p in batch])
                except BaseException as exc:  # noqa: BLE001 - run_batch isolates jobs; this is a last resort
                    log.exception("decoder batch failed as a whole")
                    errors = [exc] * len(batch)
                seconds = time.perf_counter() - tic
                failed = 0
                for p, error in zip(batch, errors):
                    if error is None:
                        p.future.set_result(None)
                    else:
                        failed += 1
                        p.future.set_exception(error)
                with self._cond:
                    self._batches += 1
                    self._jobs_done += len(batch) - failed
                    self._jobs_failed += failed
                    self._last = (len(batch), seconds)
                    self._total_size += len(batch)
                    self._total_seconds += seconds
                    self._sizes[len(batch)] = self._sizes.get(len(batch), 0) + 1
                    waiting = len(self._pending)
                try:
                    self.events.decoder_batch(len(batch), seconds, waiting)
                except Exception:  # noqa: BLE001 - metrics must never stop the decoder
                    log.exception("decoder_batch event failed")


class DecoderSession:
    """One streamed request on a :class:`DecoderWorker`: push codec ids, get audio pieces.

    The request's :class:`~runners.models.decoder.streaming.StreamingDecoder` keeps its state here; each chunk it
    decides to decode is handed to the worker as a job and waited for. ``close()`` (from any thread)
    drops the session's pending job; a ``push``/``finish`` waiting on it raises RequestAbortedError.
    """

    def __init__(
        self,
        worker: DecoderWorker,
        prompt_codec_ids: Sequence[int],
        prompt_mel: torch.Tensor,
        speaker: torch.Tensor,
        seed: int | None,
        speed: float,
        options: dict[str, object],
    ) -> None:
        self._worker = worker
        self._lock = threading.Lock()  # push/finish of one session run one at a time
        self._closed = False
        self._decoder = StreamingDecoder(
            worker.t2w, prompt_codec_ids, prompt_mel, speaker, seed=seed, speed=speed, runner=self._run, **options  # type: ignore[arg-type]
        )
        with worker._cond:
            worker._streams_open += 1

    @property
    def sample_rate(self) -> int:
        return self._decoder.sample_rate

    @property
    def timings(self) -> list[ChunkTiming]:
        """Per chunk: frames, flow and vocoder seconds (of the batches the chunk was in), samples."""
        return self._decoder.timings

    @property
    def mel(self) -> torch.Tensor:
        """The stream's flow mel so far (diagnostics and tests)."""
        return self._decoder.mel

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, codec_ids: Sequence[int]) -> list[np.ndarray]:
        """Add generated codec ids; the audio pieces that became ready (often none)."""
        with self._lock:
            self._check()
            return self._decoder.push(codec_ids)

    def finish(self) -> list[np.ndarray]:
        """Decode the rest; the last pieces. The session is closed afterwards."""
        with self._lock:
            self._check()
            try:
                return self._decoder.finish()
            finally:
                self.close()

    def close(self) -> None:
        """Drop this session's pending jobs and end it (idempotent, any thread)."""
        with self._worker._cond:
            if self._closed:
                return
            self._closed = True
            self._worker._streams_open -= 1
        self._worker._drop_owner(self)

    def __enter__(self) -> "DecoderSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self) -> None:
        if self._closed:
            raise RequestAbortedError("the stream was closed")

    def _run(self, job: DecodeJob) -> None:
        self._check()
        self._worker._wait(self._worker._submit(job, self), None)
        self._check()
