"""What the engine reports as it works; the service turns it into metrics.

A null object: these methods do nothing, so ``runners`` never imports Prometheus and the
tests need no metrics. The service installs a subclass that records them.
"""

from __future__ import annotations


class EngineEvents:
    """Hooks the engine calls; every one is cheap and must not raise."""

    def stage(self, name: str, seconds: float) -> None:
        """One request spent ``seconds`` in stage ``name`` (prepare, llm, flow, vocoder); once per request."""

    def first_chunk(self, seconds: float) -> None:
        """A streamed request sent its first audio ``seconds`` after it started."""

    def aborted(self) -> None:
        """A request was given up (the client went away or cancelled)."""

    def step(self, batch_size: int, queue_depth: int, new_tokens: int) -> None:
        """One engine-loop step: rows decoded, requests waiting, ids made."""

    def decoder_batch(self, size: int, seconds: float, queue_depth: int) -> None:
        """The decoder worker ran ``size`` decode jobs as one batch in ``seconds``; ``queue_depth`` wait."""
