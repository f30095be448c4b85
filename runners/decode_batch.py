"""One decoder batch: many requests' flow windows and vocoder pieces computed together.

Why this module: the flow (10 Euler steps, each a DiT call on the guidance rows) and the HiFT vocoder
are the decoder's cost, and they are run per request. A :class:`DecodeJob` is one request's share of
a batch (a whole utterance, or one chunk of a stream): it says what flow window it needs and, once it
has its mel, what mel and excitation it wants vocoded. :func:`run_batch` runs every job's flow as one
padded call, then the F0 predictor and the vocoder convolutions as one padded call each, and hands
each job back its own rows. The job keeps everything that is the request's alone (noise at absolute
frame positions, speaker, prompt mel, the vocoder source's phase and noise stream, cross-fades), so a
seeded request gets the numbers it gets alone.

The same function serves one request alone (a batch of one is not padded: exactly the old path), so
Token2Wav.synthesize, StreamingDecoder and the decoder worker share one code path.

Faults stay with their job: a job whose own step raises fails alone; when a batched model call
raises, its rows are retried one by one to find the culprit, and the others carry on.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from runners.flow.flow import FlowRow

if TYPE_CHECKING:
    from runners.token2wav import Token2Wav

T = TypeVar("T")
R = TypeVar("R")


class DecodeJob(abc.ABC):
    """One request's work in a decoder batch; its methods run in order, in the thread that runs the batch.

    ``flow`` is the flow window (None: this job only vocodes). Each job owns its request's state; the
    batch never mixes rows. ``flow_seconds`` / ``vocoder_seconds`` are filled in with the time of the
    batch stages the job took part in (the batch's time: what the request waited for).
    """

    flow: FlowRow | None = None
    first: bool = False  # the request's first audio: a worker serves these before later chunks

    def __init__(self) -> None:
        self.flow_seconds = 0.0
        self.vocoder_seconds = 0.0

    @property
    def frames(self) -> int:
        """Padded-length measure used to group similar jobs (token frames of the flow window)."""
        return self.flow.frames if self.flow is not None else 0

    @abc.abstractmethod
    def take_mel(self, mel: torch.Tensor | None) -> None:
        """The flow's mel (80, frames) of this job's window (None when ``flow`` is None)."""

    @abc.abstractmethod
    def f0_mel(self) -> torch.Tensor | None:
        """Mel (80, n) on the device whose F0 the vocoder needs, or None when nothing is to be vocoded."""

    @abc.abstractmethod
    def vocoder_row(self, f0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Given F0 (n,) of :meth:`f0_mel`: the mel window (80, T) and its excitation (1, T·480) to vocode."""

    @abc.abstractmethod
    def take_wave(self, wave: torch.Tensor | None) -> None:
        """The vocoded samples (T·480,) of :meth:`vocoder_row` (None when nothing was vocoded)."""


def _each(
    jobs: Sequence[DecodeJob], failed: dict[int, BaseException], fn: Callable[[int, DecodeJob], T]
) -> dict[int, T]:
    """fn(index, job) for every job not yet failed; a job whose call raises is failed alone."""
    out: dict[int, T] = {}
    for i, job in enumerate(jobs):
        if i in failed:
            continue
        try:
            out[i] = fn(i, job)
        except Exception as exc:  # noqa: BLE001 - the job's request gets it, the batch goes on
            failed[i] = exc
    return out


def _batched(call: Callable[[list[Any]], list[R]], rows: dict[int, Any], failed: dict[int, BaseException]) -> dict[int, R]:
    """call(rows) as one batch; if it raises, each row alone, so only the culprit's job fails."""
    rows = {k: v for k, v in rows.items() if k not in failed}
    if not rows:
        return {}
    keys = list(rows)
    try:
        return dict(zip(keys, call([rows[k] for k in keys]), strict=True))
    except Exception as exc:  # noqa: BLE001 - retried row by row below
        if len(keys) == 1:
            failed[keys[0]] = exc
            return {}
    out: dict[int, R] = {}
    for k in keys:
        try:
            out[k] = call([rows[k]])[0]
        except Exception as exc:  # noqa: BLE001
            failed[k] = exc
    return out


def _decode(hift: Any, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    return hift.decode_rows([mel for mel, _ in batch], [source for _, source in batch])


def run_batch(t2w: "Token2Wav", jobs: Sequence[DecodeJob]) -> list[BaseException | None]:
    """Run the jobs as one batch; per job None (done) or the exception that failed it (only it)."""
    failed: dict[int, BaseException] = {}
    flow, hift = t2w.flow, t2w.hift
    with torch.inference_mode():
        t2w._sync()
        tic = time.perf_counter()
        rows = {i: job.flow for i, job in enumerate(jobs) if job.flow is not None}
        mels = _batched(lambda batch: flow.inference_rows(batch, n_timesteps=t2w.n_timesteps), rows, failed)
        _each(jobs, failed, lambda i, job: job.take_mel(mels.get(i)))
        t2w._sync()
        flow_s = time.perf_counter() - tic

        tic = time.perf_counter()
        f0_in = {i: m for i, m in _each(jobs, failed, lambda i, job: job.f0_mel()).items() if m is not None}
        f0 = _batched(hift.f0_rows, f0_in, failed)
        voc_in = _each(jobs, failed, lambda i, job: job.vocoder_row(f0[i]) if i in f0 else None)
        waves = _batched(lambda batch: _decode(hift, batch), {i: r for i, r in voc_in.items() if r is not None}, failed)
        _each(jobs, failed, lambda i, job: job.take_wave(waves.get(i)))
        t2w._sync()
        voc_s = time.perf_counter() - tic
    for i, job in enumerate(jobs):
        if job.flow is not None:
            job.flow_seconds += flow_s
        if i in f0_in:
            job.vocoder_seconds += voc_s
    return [failed.get(i) for i in range(len(jobs))]


def run_alone(t2w: "Token2Wav", job: DecodeJob) -> None:
    """Run one job now in this thread (the single-request path); its exception is raised here."""
    error = run_batch(t2w, [job])[0]
    if error is not None:
        raise error
