"""The scheduling policy of continuous batching: who is prefilled, who decodes, who leaves (no torch here).

Each engine step the loop asks :meth:`Scheduler.schedule` for a plan, runs it on the
model, and hands the ids back with :meth:`Scheduler.update_from_output`. The policy:

- a waiting request gets a free slot in arrival order (first come, first served);
- prompts are prefilled in chunks under a per-step token budget, so a long prompt
  never stalls the decode steps of the requests already running for more than one
  chunk;
- every running request takes part in every decode step (one token each);
- a request leaves at EOS, at its token budget, or within one step of an abort, and
  its slot is free for the next waiting request at once.

It is written against plain data so it is tested with a fake step function.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from runners.errors import QueueFullError
from runners.scheduler.request import FinishReason, GenerationRequest, RequestStatus


@dataclass(frozen=True)
class PrefillChunk:
    """Prompt tokens ``start..end`` of ``request`` to run this step; ``last`` when the prompt is then done."""

    request: GenerationRequest
    start: int
    end: int

    @property
    def last(self) -> bool:
        return self.end == self.request.prompt_len


@dataclass
class SchedulerOutput:
    """The plan of one engine step."""

    prefills: list[PrefillChunk] = field(default_factory=list)
    decodes: list[GenerationRequest] = field(default_factory=list)
    aborted: list[GenerationRequest] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.prefills and not self.decodes


class SchedulerStats(BaseModel):
    """What the scheduler reports to /status and the metrics."""

    running: int = Field(description="requests holding a slot (prefilling or decoding)")
    waiting: int = Field(description="requests queued for a slot")
    max_batch: int
    max_queue: int
    batch_size: int = Field(description="requests in the last decode step")
    steps: int
    generated_tokens: int = Field(description="ids made since start")
    aborted: int = Field(description="requests aborted since start")
    finished: int = Field(description="requests finished since start")
    tokens_per_s: float = Field(description="ids made per second over the last few seconds")


class Scheduler:
    """Admission, chunked prefill and retirement for up to ``max_batch`` running requests."""

    def __init__(self, max_batch: int = 16, max_queue: int = 64, prefill_tokens_per_step: int = 512,
                 eos_id: int | None = None, rate_window_s: float = 5.0) -> None:
        if max_batch < 1 or max_queue < 0 or prefill_tokens_per_step < 1:
            raise ValueError("max_batch and prefill_tokens_per_step must be ≥ 1, max_queue ≥ 0")
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.prefill_tokens_per_step = prefill_tokens_per_step
        self.eos_id = eos_id
        self.waiting: deque[GenerationRequest] = deque()
        self.running: list[GenerationRequest] = []  # slot holders, in admission order
        self._free_slots = list(range(max_batch))
        self._abort_ids: set[str] = set()
        self._lock = threading.Lock()  # add/abort come from request threads; the rest from the loop
        self._steps = 0
        self._last_batch = 0
        self._generated = 0
        self._aborted = 0
        self._finished = 0
        self._rate_window_s = rate_window_s
        self._recent: deque[tuple[float, int]] = deque()

    # ------------------------------------------------------------ request verbs
    def add_request(self, request: GenerationRequest) -> None:
        """Queue a request; a full queue is refused at once (503 + Retry-After upstream of here)."""
        with self._lock:
            # Requests that get a free slot at the next step are not waiting for one.
            if len(self.waiting) - len(self._free_slots) >= self.max_queue:
                raise QueueFullError(
                    f"the service is at capacity: {len(self.running)} requests running and {len(self.waiting)} "
                    f"waiting (EDITX_MAX_BATCH={self.max_batch}, EDITX_MAX_QUEUE={self.max_queue}); retry shortly"
                )
            request.status = RequestStatus.WAITING
            self.waiting.append(request)

    def abort_request(self, request_id: str) -> None:
        """Mark a request for removal; it leaves at the next :meth:`schedule`, within one step."""
        with self._lock:
            self._abort_ids.add(request_id)

    def get_request_counts(self) -> tuple[int, int]:
        """(running, waiting)."""
        with self._lock:
            return len(self.running), len(self.waiting)

    def has_work(self) -> bool:
        with self._lock:
            return bool(self.running or self.waiting or self._abort_ids)

    # ---------------------------------------------------------------- the step
    def schedule(self) -> SchedulerOutput:
        """The plan of the next step: aborts applied, new requests admitted, prefill chunks, decode rows."""
        out = SchedulerOutput()
        with self._lock:
            if self._abort_ids:
                out.aborted = self._apply_aborts()
            while self.waiting and self._free_slots:
                request = self.waiting.popleft()
                request.slot = self._free_slots.pop(0)
                request.status = RequestStatus.PREFILLING
                self.running.append(request)
        budget = self.prefill_tokens_per_step
        for request in self.running:
            if request.status is RequestStatus.RUNNING:
                if request.scheduled_decodes + 1 < request.params.max_new_tokens:
                    out.decodes.append(request)
            elif request.status is RequestStatus.PREFILLING and budget > 0:
                end = min(request.prompt_len, request.prefilled + budget)
                out.prefills.append(PrefillChunk(request, request.prefilled, end))
                budget -= end - request.prefilled
        for request in out.decodes:
            request.scheduled_decodes += 1
        for chunk in out.prefills:
            chunk.request.prefilled = chunk.end
            if chunk.last:
                chunk.request.status = RequestStatus.RUNNING
        self._steps += 1
        self._last_batch = len(out.decodes)
        return out

    def _apply_aborts(self) -> list[GenerationRequest]:
        gone: list[GenerationRequest] = []
        for request in [*self.waiting, *self.running]:
            if request.request_id in self._abort_ids:
                gone.append(request)
        for request in gone:
            if request in self.waiting:
                self.waiting.remove(request)
            else:
                self._release(request)
            request.finish(FinishReason.ABORTED, "aborted: the client went away or cancelled")
        self._aborted += len(gone)
        # Ids of requests that already finished (or never came) are dropped too.
        self._abort_ids.clear()
        return gone

    def update_from_output(self, new_ids: dict[str, list[int]]) -> list[GenerationRequest]:
        """Deliver the ids each request made (in order); retire those at EOS or at their budget."""
        done: list[GenerationRequest] = []
        made = 0
        for request in list(self.running):
            ids = new_ids.get(request.request_id)
            if not ids or request.finished:
                continue
            room = request.params.max_new_tokens - len(request.output)
            keep: list[int] = []
            reason: FinishReason | None = None
            for token in ids:
                if self.eos_id is not None and token == self.eos_id:
                    reason = FinishReason.EOS
                    break
                keep.append(token)
                if len(keep) >= room:
                    reason = FinishReason.LENGTH
                    break
            made += len(keep)
            request.emit(keep)
            if reason is not None:
                with self._lock:
                    self._release(request)
                request.finish(reason)
                done.append(request)
        self._generated += made
        self._finished += len(done)
        if made:
            now = time.monotonic()
            self._recent.append((now, made))
            while self._recent and now - self._recent[0][0] > self._rate_window_s:
                self._recent.popleft()
        return done

    def fail_all(self, error: str) -> list[GenerationRequest]:
        """End every request with an error (the model step raised); the loop goes on serving."""
        with self._lock:
            victims = [*self.running, *self.waiting]
            for request in list(self.running):
                self._release(request)
            self.waiting.clear()
        for request in victims:
            request.finish(FinishReason.ERROR, error)
        return victims

    def _release(self, request: GenerationRequest) -> None:
        if request in self.running:
            self.running.remove(request)
        if request.slot is not None:
            self._free_slots.append(request.slot)
            self._free_slots.sort()  # lowest slots first: decode batches stay compact
            request.slot = None

    # ------------------------------------------------------------------ stats
    def make_stats(self) -> SchedulerStats:
        with self._lock:
            running, waiting = len(self.running), len(self.waiting)
        now = time.monotonic()
        recent = [(t, n) for t, n in self._recent if now - t <= self._rate_window_s]
        span = max(now - recent[0][0], 1.0) if recent else 1.0
        rate = sum(n for _, n in recent) / span
        return SchedulerStats(
            running=running, waiting=waiting, max_batch=self.max_batch, max_queue=self.max_queue,
            batch_size=self._last_batch, steps=self._steps, generated_tokens=self._generated,
            aborted=self._aborted, finished=self._finished, tokens_per_s=round(rate, 1),
        )
