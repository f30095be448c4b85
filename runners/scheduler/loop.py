"""The engine loop: one thread owns the LLM and runs schedule → execute → update_from_output.

Request threads only ever call :meth:`EngineLoop.submit` / :meth:`EngineLoop.submit_job` and
:meth:`EngineLoop.abort` / :meth:`EngineLoop.abort_job`;
everything that touches the model's weights, cache and generators happens on the
loop's own thread, so no lock is held around a forward pass and requests join and
leave between any two steps.

Sampled ids stay on the device and are read back every ``sync_every`` steps (and
whenever the loop would otherwise idle): on a GPU a decode step then never waits
for the host. A request that said EOS meanwhile makes at most ``sync_every - 1``
throw-away steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from runners.kv_cache import PrefixStore
from runners.scheduler.request import GenerationRequest, Job
from runners.scheduler.scheduler import Scheduler, SchedulerOutput

log = logging.getLogger("editx.scheduler")


class StepRunner(Protocol):
    """What the loop needs from a model: run one planned step and return the ids it sampled."""

    def execute(self, plan: SchedulerOutput) -> "StepTokens": ...

    def release(self) -> None: ...


@dataclass
class StepTokens:
    """The ids one step sampled, one per request, still where they were made (host or device)."""

    request_ids: list[str]
    ids: torch.Tensor | list[int]


class LLMRunner:
    """Runs planned steps on :class:`runners.llm.Step1LM` with a preallocated slot cache.

    With ``prefix_tokens`` > 0 it keeps a :class:`PrefixStore` of shared prompt heads: the
    scheduler asks :attr:`prefix_lookup` and plans copies instead of prefills.
    """

    def __init__(self, lm, slots: int, max_len: int, decode: Callable | None = None,  # noqa: ANN001
                 prefix_tokens: int = 0) -> None:
        self.lm = lm
        self.cache = lm.new_cache(slots, max_len)
        self.sampler = lm.new_sampler(slots)
        self.device = lm.device
        self.last_ids = torch.zeros(slots, dtype=torch.long, device=self.device)
        self.decode = decode or lm.decode_step  # a CUDA-graph replayer can stand in
        self.prefixes = PrefixStore(prefix_tokens) if prefix_tokens > 0 else None

    @property
    def prefix_lookup(self) -> Callable[[bytes], bool] | None:
        """Whether a head is stored, for the scheduler; None when no store is kept (prompts prefill whole)."""
        return self.prefixes.__contains__ if self.prefixes is not None else None

    def execute(self, plan: SchedulerOutput) -> StepTokens:
        request_ids: list[str] = []
        sampled: list[torch.Tensor] = []
        if plan.decodes:
            ids = self._decode(plan.decodes)
            request_ids += [r.request_id for r in plan.decodes]
            sampled.append(ids)
        for request in plan.prefix_hits:
            assert request.slot is not None and self.prefixes is not None
            self.prefixes.restore(request.prefix_key, self.cache, request.slot)
            self.sampler.start(request.slot, request.prompt_ids, request.params)
        for chunk in plan.prefills:
            request, slot = chunk.request, chunk.request.slot
            assert slot is not None
            if chunk.start == 0:
                self.sampler.start(slot, request.prompt_ids, request.params)
            logits = self.lm.prefill(self.cache, slot, request.prompt_ids[chunk.start:chunk.end], chunk.start)
            if chunk.completes_prefix and self.prefixes is not None:
                self.prefixes.put(request.prefix_key, self.cache, slot, chunk.end)
            if chunk.last:
                first = self.sampler.sample([slot], logits)
                self.last_ids[slot] = first[0]
                request_ids.append(request.request_id)
                sampled.append(first)
        ids = torch.cat(sampled) if sampled else torch.zeros(0, dtype=torch.long)
        return StepTokens(request_ids, ids)

    def _decode(self, requests: list[GenerationRequest]) -> torch.Tensor:
        slots = [r.slot for r in requests]
        assert all(s is not None for s in slots)
        rows = max(slots) + 1  # type: ignore[type-var]
        lengths = self.cache.lengths
        top = self.cache.max_len - 1
        # Rows that do not decode now (free or prefilling slots) write a throw-away key at their
        # next position, which their own next prefill or decode overwrites before anyone reads it.
        positions = [min(lengths[r], top) for r in range(rows)]
        key_len = max(lengths[s] for s in slots) + 1  # type: ignore[index]
        logits = self.decode(self.cache, self.last_ids[:rows], torch.tensor(positions, device=self.device), key_len)
        for s in slots:
            lengths[s] += 1  # type: ignore[index]
        index = torch.tensor(slots, dtype=torch.long, device=self.device)
        ids = self.sampler.sample(slots, logits.index_select(0, index))  # type: ignore[arg-type]
        self.last_ids.index_copy_(0, index, ids)
        return ids

    def release(self) -> None:
        """Drop the cache and the stored heads (the loop stops before an unload or offload)."""
        self.cache = None  # type: ignore[assignment]
        self.prefixes = None


class EngineLoop:
    """The one thread that steps the scheduler; start/stop with the loaded model."""

    def __init__(self, runner: StepRunner, scheduler: Scheduler, *, sync_every: int = 1,
                 on_step: Callable[[SchedulerOutput, float], None] | None = None) -> None:
        self.runner = runner
        self.scheduler = scheduler
        self.sync_every = max(1, sync_every)
        self.on_step = on_step
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: list[StepTokens] = []
        self._thread = threading.Thread(target=self._run, name="editx-engine-loop", daemon=True)

    def start(self) -> "EngineLoop":
        self._thread.start()
        return self

    def submit(self, request: GenerationRequest) -> GenerationRequest:
        if self._stop.is_set():
            raise RuntimeError("the engine loop is stopped")
        self.scheduler.add_request(request)
        self._wake.set()
        return request

    def submit_job(self, requests: Sequence[GenerationRequest], job_id: str | None = None) -> Job:
        """Queue the pieces of one user request as one job (one queue place; all or nothing).

        Read the pieces in order with ``job.tokens()`` (or each ``job.requests[k].tokens()``),
        the progress with ``job.pieces_done`` / ``job.progress``; stop it with :meth:`abort_job`.
        """
        if self._stop.is_set():
            raise RuntimeError("the engine loop is stopped")
        job = self.scheduler.add_job(requests, job_id)
        self._wake.set()
        return job

    def abort(self, request_id: str) -> None:
        self.scheduler.abort_request(request_id)
        self._wake.set()

    def abort_job(self, job_id: str) -> None:
        """Abort every piece of a job: running ones leave within one step, queued ones never start."""
        self.scheduler.abort_job(job_id)
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop stepping; requests still held are ended with an error (callers drain first)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        self.scheduler.fail_all("the model was unloaded")
        self.runner.release()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.scheduler.has_work():
                self._flush()
                if self.on_step is not None:
                    self.on_step(SchedulerOutput(), 0.0)  # idle: batch 0, nothing waiting
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                self.step()
            except Exception as exc:  # a failed step must not kill the loop: end its requests, go on
                log.exception("engine step failed")
                self._pending.clear()
                self.scheduler.fail_all(f"generation failed: {type(exc).__name__}: {exc}")

    def step(self) -> None:
        plan = self.scheduler.schedule()
        if plan.empty:
            self._flush()
            return
        start = time.perf_counter()
        self._pending.append(self.runner.execute(plan))
        if len(self._pending) >= self.sync_every or not plan.decodes:
            self._flush()
        if self.on_step is not None:
            self.on_step(plan, time.perf_counter() - start)

    def _flush(self) -> None:
        if not self._pending:
            return
        new_ids: dict[str, list[int]] = {}
        for tokens in self._pending:
            ids = tokens.ids.tolist() if isinstance(tokens.ids, torch.Tensor) else list(tokens.ids)
            for request_id, token in zip(tokens.request_ids, ids):
                new_ids.setdefault(request_id, []).append(int(token))
        self._pending.clear()
        self.scheduler.update_from_output(new_ids)
