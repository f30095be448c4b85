"""The scheduling policy of continuous batching: who is prefilled, who decodes, who leaves (no torch here).

Each engine step the loop asks :meth:`Scheduler.schedule` for a plan, runs it on the
model, and hands the ids back with :meth:`Scheduler.update_from_output`. The policy:

- a waiting request gets a free slot in arrival order (first come, first served);
- prompts are prefilled in chunks under a per-step token budget, so a long prompt
  never stalls the decode steps of the requests already running for more than one
  chunk;
- every running request takes part in every decode step (one token each);
- a request leaves at EOS, at its token budget, or within one step of an abort, and
  its slot is free for the next waiting request at once;
- with a prefix store (``prefix_cached``), a prompt's shareable head (its system turn:
  the voice of a clone, the fixed persona of an edit) is prefilled once: a request
  whose head is stored starts after it (the runner copies its K/V into the slot), one
  whose head another request is computing right now waits for it, and the head is
  always prefilled as chunks of its own, so its K/V are the same numbers whether
  computed or copied.

It is written against plain data so it is tested with a fake step function.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
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

    @property
    def completes_prefix(self) -> bool:
        """This chunk ends exactly at the request's shareable head: its K/V may be stored after it."""
        return self.request.shares_prefix and self.start < self.request.prefix_len == self.end


@dataclass
class SchedulerOutput:
    """The plan of one engine step."""

    prefills: list[PrefillChunk] = field(default_factory=list)
    decodes: list[GenerationRequest] = field(default_factory=list)
    aborted: list[GenerationRequest] = field(default_factory=list)
    prefix_hits: list[GenerationRequest] = field(default_factory=list)  # copy their stored head, then prefill

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
    prefix_hits: int = Field(0, description="requests whose prompt head (system turn) was copied from the prefix "
                                            "store instead of prefilled")
    prefill_tokens_reused: int = Field(0, description="prompt tokens those requests did not prefill")
    prefix_store_entries: int = Field(0, description="prompt heads held as K/V (EDITX_PREFIX_CACHE_TOKENS)")
    prefix_store_tokens: int = Field(0, description="tokens those heads hold")
    prefix_store_mb: float = Field(0.0, description="memory those heads hold, on the LLM's device")


class Scheduler:
    """Admission, chunked prefill and retirement for up to ``max_batch`` running requests."""

    def __init__(self, max_batch: int = 16, max_queue: int = 64, prefill_tokens_per_step: int = 512,
                 eos_id: int | None = None, rate_window_s: float = 5.0,
                 prefix_cached: Callable[[bytes], bool] | None = None) -> None:
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
        self.prefix_cached = prefix_cached  # None: every prompt is prefilled whole
        self._prefix_owners: dict[bytes, GenerationRequest] = {}  # heads being prefilled now, by whom
        self._prefix_hits = 0
        self._prefix_reused = 0

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

    @property
    def generated_tokens(self) -> int:
        """Ids delivered since start."""
        return self._generated

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
                if not self._claim_prefix(request, out):
                    continue  # another request is prefilling the same head: copy it once stored
                budget -= self._plan_prefill(request, budget, out)
        for request in out.decodes:
            request.scheduled_decodes += 1
        for chunk in out.prefills:
            chunk.request.prefilled = chunk.end
            if chunk.completes_prefix:
                self._disown_prefix(chunk.request)  # the runner stores the head in this step
            if chunk.last:
                chunk.request.status = RequestStatus.RUNNING
        self._steps += 1
        self._last_batch = len(out.decodes)
        return out

    def _sharing(self, request: GenerationRequest) -> bool:
        return self.prefix_cached is not None and request.shares_prefix

    def _claim_prefix(self, request: GenerationRequest, out: SchedulerOutput) -> bool:
        """Before a prompt's first chunk: use its stored head, or own computing it; False = wait for its owner."""
        if request.prefilled > 0 or not self._sharing(request):
            return True
        key = request.prefix_key
        assert self.prefix_cached is not None
        if self.prefix_cached(key):
            out.prefix_hits.append(request)
            request.prefilled = request.prefix_len
            self._prefix_hits += 1
            self._prefix_reused += request.prefix_len
            return True
        owner = self._prefix_owners.setdefault(key, request)
        return owner is request

    def _plan_prefill(self, request: GenerationRequest, budget: int, out: SchedulerOutput) -> int:
        """Chunks of the request's prompt within ``budget`` (the shared head ends a chunk); tokens planned."""
        start = position = request.prefilled
        boundary = request.prefix_len if self._sharing(request) else 0
        while budget > position - start and position < request.prompt_len:
            end = min(request.prompt_len, start + budget)
            if position < boundary:
                end = min(end, boundary)
            out.prefills.append(PrefillChunk(request, position, end))
            position = end
        return position - start

    def _disown_prefix(self, request: GenerationRequest) -> None:
        """``request`` no longer computes its head for the others (done, or gone)."""
        if request.shares_prefix and self._prefix_owners.get(request.prefix_key) is request:
            del self._prefix_owners[request.prefix_key]

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
        self._disown_prefix(request)  # leaving mid-head: the next request with this head computes it
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
            prefix_hits=self._prefix_hits, prefill_tokens_reused=self._prefix_reused,
        )
