"""What the pipeline yields: typed audio chunks, and the whole answer as their sum.

A job runs as an iterator of :class:`AudioChunk`; each carries the codec ids and the stage
seconds spent on it, so a stream can report its cost as it goes. Collected, they are a
:class:`Synthesis`: a whole answer is nothing but a collected stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

STAGES = ("prepare", "llm", "flow", "vocoder")  # the stage names every job reports


def add_timings(total: dict[str, float], more: dict[str, float]) -> None:
    for stage, seconds in more.items():
        total[stage] = total.get(stage, 0.0) + seconds


@dataclass(frozen=True)
class Caption:
    """Where one spoken piece (a sentence, a long edit's piece) sits in the answer, in seconds.

    Measured on the samples actually produced (after speed changes, pauses and cross-fades):
    ``start_s`` is where its first sample landed, ``end_s`` where its last one did (neighbours
    joined by a cross-fade overlap by its length). ``turn`` and ``voice`` say which dialogue
    turn it belongs to (None outside a dialogue).
    """

    index: int
    start_s: float
    end_s: float
    text: str
    turn: int | None = None
    voice: str | None = None


@dataclass
class AudioChunk:
    """One piece of a waveform; concatenated in ``index`` order the chunks are the whole answer.

    ``tokens`` and ``timings`` are what was spent on this chunk since the previous one (codec
    ids generated, seconds per stage). The chunk marked ``last`` may be empty.
    """

    samples: np.ndarray  # float32 mono
    sample_rate: int
    index: int
    last: bool = False
    tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    captions: tuple[Caption, ...] = ()  # pieces whose end is known by the end of this chunk

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


@dataclass
class Synthesis:
    """A generated waveform plus what it took to make it."""

    samples: np.ndarray  # float32 mono
    sample_rate: int
    generated_tokens: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    iterations: int = 1
    captions: list[Caption] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


class JobStream(Iterator[AudioChunk]):
    """The chunks of one running job (already checked and queued); closing it aborts the rest.

    ``tokens`` and ``timings`` add up what the chunks carried so far; :meth:`collect` reads the
    rest and returns the whole answer.
    """

    def __init__(self, chunks: Iterator[AudioChunk], sample_rate: int, iterations: int, kind: str) -> None:
        self._chunks = chunks
        self.sample_rate = sample_rate
        self.iterations = iterations
        self.kind = kind
        self.tokens = 0
        self.timings: dict[str, float] = {}
        self.captions: list[Caption] = []

    def __iter__(self) -> "JobStream":
        return self

    def __next__(self) -> AudioChunk:
        chunk = next(self._chunks)
        self.tokens += chunk.tokens
        add_timings(self.timings, chunk.timings)
        self.captions.extend(chunk.captions)
        return chunk

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def collect(self) -> Synthesis:
        """Every remaining chunk, joined: the whole answer."""
        try:
            pieces = [chunk.samples for chunk in self if chunk.samples.size]
        finally:
            self.close()
        samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return Synthesis(samples.astype(np.float32, copy=False), self.sample_rate, self.tokens, dict(self.timings),
                         self.iterations, list(self.captions))
