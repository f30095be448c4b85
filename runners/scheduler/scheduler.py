"""The scheduling policy of continuous batching: who is prefilled, who decodes, who leaves (no torch here).

Each engine step the loop asks :meth:`Scheduler.schedule` for a plan, runs it on the
model, and hands the ids back with :meth:`Scheduler.update_from_output`. The policy:

- a waiting request gets a free slot in arrival order (first come, first served);
- a *job* (the pieces of one user request: a long text's sentences) is admitted or
  refused whole and takes one place of the waiting queue however many pieces it has;
  its pieces get slots one by one, in order, as slots free up. The fair rule: each
  free slot goes to the claimant holding the fewest slots right now, ties to the one
  that has waited longest; claimants are the oldest waiting single request (it holds
  none) and every job with pieces still to start (it holds as many as it has pieces
  running; it has waited since it last got a slot). So a lone job takes every slot;
  a short request arriving meanwhile is never behind a job that holds a slot, so it
  waits for pieces to end (one piece's length), not for the rest of the job; several
  jobs share the slots evenly and take turns; a job is never starved (once it holds
  none it beats everyone who arrived after it last got a slot); and single requests
  keep first come, first served among themselves. A job is what one user asked for:
  under load each user, short or long, gets about one slot, and a long text speeds
  up again as soon as the others are served;
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

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from runners.errors import QueueFullError
from runners.scheduler.request import FinishReason, GenerationRequest, Job, RequestStatus


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

    running: int = Field(description="requests holding a slot (prefilling or decoding), pieces of jobs included")
    waiting: int = Field(description="requests queued for a slot: single requests and the not yet started pieces "
                                     "of jobs")
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
    queue_places_used: int = Field(0, description="places of max_queue in use: each waiting single request and each "
                                                  "job with pieces still to start counts once")
    jobs_running: int = Field(0, description="jobs (a long text's sentences, queued as one) with a piece started "
                                             "and pieces not done")
    jobs_waiting: int = Field(0, description="jobs in the queue none of whose pieces has had a slot yet")
    job_pieces_waiting: int = Field(0, description="pieces of jobs not started yet (part of waiting)")


class Scheduler:
    """Admission, chunked prefill and retirement for up to ``max_batch`` running requests.

    Single requests come by :meth:`add_request`, jobs (pieces of one user request that
    count once against ``max_queue``) by :meth:`add_job`; see the module docstring for
    how free slots are shared between them.
    """

    def __init__(self, max_batch: int = 16, max_queue: int = 64, prefill_tokens_per_step: int = 512,
                 eos_id: int | None = None, rate_window_s: float = 5.0,
                 prefix_cached: Callable[[bytes], bool] | None = None) -> None:
        if max_batch < 1 or max_queue < 0 or prefill_tokens_per_step < 1:
            raise ValueError("max_batch and prefill_tokens_per_step must be ≥ 1, max_queue ≥ 0")
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.prefill_tokens_per_step = prefill_tokens_per_step
        self.eos_id = eos_id
        self.waiting: deque[GenerationRequest] = deque()  # single requests; jobs keep their own pieces
        self.running: list[GenerationRequest] = []  # slot holders, in admission order
        self.jobs: list[Job] = []  # admitted jobs with pieces not done, in arrival order
        self._job_pieces_waiting = 0  # pieces of those jobs that have not had a slot (and did not end)
        self._turns = itertools.count(1)  # who waited longest: singles since queued, jobs since their last slot
        self._free_slots = list(range(max_batch))
        self._abort_ids: set[str] = set()
        self._abort_job_ids: set[str] = set()
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
            self._check_queue_room()
            request.status = RequestStatus.WAITING
            request.queued_turn = next(self._turns)
            self.waiting.append(request)

    def add_job(self, requests: Sequence[GenerationRequest], job_id: str | None = None) -> Job:
        """Queue the pieces of one user request as one job, in the order given; all or nothing.

        The job takes one place of the queue however many pieces it has (so the longest
        text fits as soon as one place is free); a full queue refuses the whole job with
        :class:`QueueFullError` and none of its pieces is queued.
        """
        with self._lock:
            self._check_queue_room()
            job = Job(requests, job_id)  # checks the pieces (ValueError) before anything is queued
            for piece in job.requests:
                piece.status = RequestStatus.WAITING
            job._turn = next(self._turns)
            self.jobs.append(job)
            self._job_pieces_waiting += len(job)
            return job

    def _check_queue_room(self) -> None:
        # Requests that get a free slot at the next step are not waiting for one.
        if self._queue_places() - len(self._free_slots) >= self.max_queue:
            raise QueueFullError(
                f"the service is at capacity: {len(self.running)} requests running and {self._queue_places()} "
                f"queued, a long text counting once (EDITX_MAX_BATCH={self.max_batch}, "
                f"EDITX_MAX_QUEUE={self.max_queue}); retry shortly"
            )

    def _queue_places(self) -> int:
        """Places of ``max_queue`` in use: each waiting single request, and each job with pieces to start, once."""
        return len(self.waiting) + sum(1 for job in self.jobs if job._pending_piece() is not None)

    def abort_request(self, request_id: str) -> None:
        """Mark a request for removal; it leaves at the next :meth:`schedule`, within one step.

        A piece of a job may be aborted alone: the rest of its job goes on.
        """
        with self._lock:
            self._abort_ids.add(request_id)

    def abort_job(self, job_id: str) -> None:
        """Mark every piece of a job for removal at the next :meth:`schedule`: running pieces leave
        within one step and free their slots, pieces not started never start."""
        with self._lock:
            self._abort_job_ids.add(job_id)

    def get_request_counts(self) -> tuple[int, int]:
        """(running, waiting): requests holding a slot, and requests queued for one (job pieces included)."""
        with self._lock:
            return len(self.running), len(self.waiting) + self._job_pieces_waiting

    def get_job_counts(self) -> tuple[int, int]:
        """(running, waiting) jobs: with a piece started and pieces not done, and none started yet."""
        with self._lock:
            return self._job_counts()

    def _job_counts(self) -> tuple[int, int]:
        # A job whose last piece just ended is not counted even before the loop forgets it.
        live = [job for job in self.jobs if not job.finished]
        started = sum(1 for job in live if job.started)
        return started, len(live) - started

    @property
    def generated_tokens(self) -> int:
        """Ids delivered since start."""
        return self._generated

    def has_work(self) -> bool:
        with self._lock:
            return bool(self.running or self.waiting or self.jobs or self._abort_ids or self._abort_job_ids)

    # ---------------------------------------------------------------- the step
    def schedule(self) -> SchedulerOutput:
        """The plan of the next step: aborts applied, new requests admitted, prefill chunks, decode rows."""
        out = SchedulerOutput()
        with self._lock:
            if self._abort_ids or self._abort_job_ids:
                out.aborted = self._apply_aborts()
            self._forget_finished_jobs()
            while self._free_slots:
                request = self._next_to_admit()
                if request is None:
                    break
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

    def _next_to_admit(self) -> GenerationRequest | None:
        """Take the request the next free slot goes to (the fair rule of the module docstring), or None."""
        best: tuple[int, int] | None = None
        best_job: Job | None = None
        if self.waiting:
            best = (0, self.waiting[0].queued_turn)
        for job in self.jobs:
            if job._pending_piece() is None:
                continue
            key = (job._holding, job._turn)
            if best is None or key < best:
                best, best_job = key, job
        if best is None:
            return None
        if best_job is None:
            return self.waiting.popleft()
        piece = best_job._pending_piece()
        assert piece is not None
        best_job._next += 1
        best_job._started += 1
        best_job._holding += 1
        best_job._turn = next(self._turns)
        self._job_pieces_waiting -= 1
        return piece

    def _forget_finished_jobs(self) -> None:
        if any(job.finished for job in self.jobs):
            self.jobs = [job for job in self.jobs if not job.finished]

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
        for job in self.jobs:
            whole = job.job_id in self._abort_job_ids
            for piece in job.requests:
                if not piece.finished and (whole or piece.request_id in self._abort_ids):
                    gone.append(piece)
        for request in [*self.waiting, *self.running]:
            if request.request_id in self._abort_ids and request.job is None:
                gone.append(request)
        for request in gone:
            if request.slot is not None:
                self._release(request)
            elif request.job is not None:
                self._job_pieces_waiting -= 1  # a piece that never started: it is simply not started
            else:
                self.waiting.remove(request)
            request.finish(FinishReason.ABORTED, "aborted: the client went away or cancelled")
        self._aborted += len(gone)
        # Ids of requests or jobs that already finished (or never came) are dropped too.
        self._abort_ids.clear()
        self._abort_job_ids.clear()
        self._forget_finished_jobs()
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
                if request.job is not None and request.job.finished:
                    with self._lock:
                        self._forget_finished_jobs()
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
            pending = [piece for job in self.jobs for piece in job.requests[job._next:] if not piece.finished]
            victims = [*self.running, *self.waiting, *pending]
            for request in list(self.running):
                self._release(request)
            self.waiting.clear()
            self.jobs.clear()
            self._job_pieces_waiting = 0
        for request in victims:
            request.finish(FinishReason.ERROR, error)
        return victims

    def _release(self, request: GenerationRequest) -> None:
        self._disown_prefix(request)  # leaving mid-head: the next request with this head computes it
        if request in self.running:
            self.running.remove(request)
            if request.job is not None:
                request.job._holding -= 1
        if request.slot is not None:
            self._free_slots.append(request.slot)
            self._free_slots.sort()  # lowest slots first: decode batches stay compact
            request.slot = None

    # ------------------------------------------------------------------ stats
    def make_stats(self) -> SchedulerStats:
        with self._lock:
            running, waiting = len(self.running), len(self.waiting) + self._job_pieces_waiting
            places = self._queue_places()
            jobs_started, jobs_waiting = self._job_counts()
            pieces_waiting = self._job_pieces_waiting
        now = time.monotonic()
        recent = [(t, n) for t, n in self._recent if now - t <= self._rate_window_s]
        span = max(now - recent[0][0], 1.0) if recent else 1.0
        rate = sum(n for _, n in recent) / span
        return SchedulerStats(
            running=running, waiting=waiting, max_batch=self.max_batch, max_queue=self.max_queue,
            batch_size=self._last_batch, steps=self._steps, generated_tokens=self._generated,
            aborted=self._aborted, finished=self._finished, tokens_per_s=round(rate, 1),
            prefix_hits=self._prefix_hits, prefill_tokens_reused=self._prefix_reused,
            queue_places_used=places, jobs_running=jobs_started, jobs_waiting=jobs_waiting,
            job_pieces_waiting=pieces_waiting,
        )
