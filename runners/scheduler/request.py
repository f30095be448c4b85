"""One generation request as the scheduler tracks it, the channel its tokens leave by, and jobs of them."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
import uuid
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

from runners.errors import RequestAbortedError
from runners.sampling import SamplingParams


class RequestStatus(str, Enum):
    WAITING = "waiting"        # queued, no slot yet
    PREFILLING = "prefilling"  # has a slot; prompt chunks still to run
    RUNNING = "running"        # in every decode step
    FINISHED = "finished"


class FinishReason(str, Enum):
    EOS = "eos"
    LENGTH = "length"
    ABORTED = "aborted"
    ERROR = "error"


@dataclass(eq=False)
class GenerationRequest:
    """Prompt ids in, LLM ids out (streamed through :meth:`tokens` as they are made)."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    prefix_len: int = 0  # head of the prompt that other requests may share (the system turn); 0 = none
    arrival: float = field(default_factory=time.monotonic)
    status: RequestStatus = RequestStatus.WAITING
    slot: int | None = None
    prefilled: int = 0          # prompt tokens already in the cache
    scheduled_decodes: int = 0  # decode steps scheduled (host count: no device read needed)
    output: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    abort_requested: bool = False  # set by whoever asked the loop to abort it (once)
    error: str | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    job: "Job | None" = field(default=None, repr=False)  # the job it is a piece of; None for a single request
    queued_turn: int = 0  # the scheduler's counter when it was queued: who waited longest goes first
    _prefix_key: bytes | None = field(default=None, repr=False)
    _events: "queue.SimpleQueue[list[int] | None]" = field(default_factory=queue.SimpleQueue, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def shares_prefix(self) -> bool:
        """Whether the prompt has a shareable head with something after it to prefill."""
        return 0 < self.prefix_len < self.prompt_len

    @property
    def prefix_key(self) -> bytes:
        """Digest of the shareable head's ids: equal keys mean equal K/V for those positions."""
        if self._prefix_key is None:
            head = array("q", self.prompt_ids[: self.prefix_len]).tobytes()
            self._prefix_key = hashlib.blake2b(head, digest_size=16).digest()
        return self._prefix_key

    @property
    def finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def emit(self, ids: list[int]) -> None:
        """Called by the engine loop with newly made ids (never EOS)."""
        if ids:
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            self.output.extend(ids)
            self._events.put(ids)

    def finish(self, reason: FinishReason, error: str | None = None) -> None:
        if self.finished:
            return
        self.status, self.finish_reason, self.error = RequestStatus.FINISHED, reason, error
        self.finished_at = time.monotonic()
        self._events.put(None)
        self._done.set()
        if self.job is not None:
            self.job._piece_finished(reason)

    def tokens(self, poll_s: float = 0.1, cancelled: threading.Event | None = None) -> Iterator[list[int]]:
        """Yield the ids as they arrive until the request ends; raises when it was aborted or failed.

        ``cancelled`` is checked while waiting, so a caller that gives up is noticed
        within ``poll_s`` even when no token comes (the caller then aborts the request).
        """
        while True:
            if cancelled is not None and cancelled.is_set():
                raise RequestAbortedError("the request was cancelled")
            try:
                item = self._events.get(timeout=poll_s)
            except queue.Empty:
                continue
            if item is None:
                break
            yield item
        if self.finish_reason is FinishReason.ABORTED:
            raise RequestAbortedError(self.error or "the request was aborted")
        if self.finish_reason is FinishReason.ERROR:
            raise RuntimeError(self.error or "generation failed")

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


class Job:
    """The pieces of one user request (a long text's sentences, a dialogue's turns, a long recording's pieces).

    Why a job and not N requests: the pieces are one answer, so they are admitted or
    refused together and take one place of the waiting queue however many there are
    (a 10,000-character text is ~200 sentences, more than the whole queue holds), and
    they start in order so the first audio is ready first. Each piece is still a
    :class:`GenerationRequest` with its own ids and :meth:`GenerationRequest.tokens`.

    The scheduler (under its lock) owns the fields that start with ``_`` except the
    progress ones; :attr:`pieces_done`, :attr:`progress`, :attr:`finished` and
    :meth:`wait` are safe from any thread (a progress bar polls them).
    """

    def __init__(self, requests: Sequence[GenerationRequest], job_id: str | None = None) -> None:
        pieces = list(requests)
        if not pieces:
            raise ValueError("a job needs at least one request")
        if len({r.request_id for r in pieces}) != len(pieces):
            raise ValueError("the requests of a job need distinct request ids")
        if any(r.job is not None or r.status is not RequestStatus.WAITING or r.slot is not None for r in pieces):
            raise ValueError("a request can be queued once only: in one job, or on its own")
        self.job_id = job_id or uuid.uuid4().hex
        self.requests = pieces
        self.arrival = time.monotonic()
        self.abort_requested = False  # set by whoever asked the loop to abort it (once)
        self._next = 0     # index of the next piece that has not had a slot
        self._started = 0  # pieces that got a slot so far
        self._holding = 0  # pieces holding a slot now
        self._turn = 0     # the scheduler's counter when the job last got a slot (or was queued)
        self._lock = threading.Lock()
        self._done = 0   # pieces that made all their ids
        self._ended = 0  # pieces that ended for any reason (done, aborted, failed)
        self._all_done = threading.Event()
        for piece in pieces:
            piece.job = self

    def __len__(self) -> int:
        return len(self.requests)

    def __repr__(self) -> str:
        return f"Job({self.job_id!r}, {self.pieces_done}/{self.pieces_total} done)"

    @property
    def pieces_total(self) -> int:
        return len(self.requests)

    @property
    def pieces_done(self) -> int:
        """Pieces that made all their ids (an aborted or failed piece is not done: the bar stops where it was)."""
        return self._done

    @property
    def progress(self) -> float:
        """Share of pieces done, 0 to 1, for a progress bar."""
        return self._done / len(self.requests)

    @property
    def started(self) -> bool:
        """Whether a piece has had a slot (a job that has not is still waiting in the queue)."""
        return self._started > 0

    @property
    def finished(self) -> bool:
        """Every piece has ended (done, aborted or failed): the job holds no slot and no queue place."""
        return self._all_done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every piece has ended (see :attr:`finished`); False on timeout."""
        return self._all_done.wait(timeout)

    def tokens(self, poll_s: float = 0.1,
               cancelled: threading.Event | None = None) -> Iterator[tuple[int, list[int]]]:
        """(piece index, ids) of every piece in order: all of piece k's ids come before piece k+1's.

        Raises like :meth:`GenerationRequest.tokens` at the first piece that was aborted or failed.
        """
        for k, piece in enumerate(self.requests):
            for ids in piece.tokens(poll_s, cancelled):
                yield k, ids

    # ------------------------------------------------------- scheduler-owned
    def _pending_piece(self) -> GenerationRequest | None:
        """The next piece to give a slot (pieces aborted on their own before starting are skipped)."""
        while self._next < len(self.requests) and self.requests[self._next].finished:
            self._next += 1
        return self.requests[self._next] if self._next < len(self.requests) else None

    def _piece_finished(self, reason: FinishReason) -> None:
        with self._lock:
            if reason in (FinishReason.EOS, FinishReason.LENGTH):
                self._done += 1
            self._ended += 1
            if self._ended == len(self.requests):
                self._all_done.set()
