"""One generation request as the scheduler tracks it, and the channel its tokens leave by."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from array import array
from collections.abc import Iterator
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
