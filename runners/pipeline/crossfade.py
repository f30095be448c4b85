"""The one cross-fade: waveform pieces joined in order without clicks, whole or as they arrive.

Consecutive sentences of a long text (and, with a gap, turns of a script) overlap by a short
raised-cosine fade whose weights sum to one, so a join never jumps. :class:`CrossfadeJoiner`
does it on streams, holding back only the fade's length, and gives exactly the samples of
:func:`join_with_crossfade`: a streamed answer and a whole one are the same audio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

def join_with_crossfade(
    pieces: Sequence[np.ndarray], sample_rate: int, fade_s: float = 0.02, gap_s: float = 0.0
) -> np.ndarray:
    """Concatenate mono pieces in order without clicks.

    ``gap_s == 0``: neighbours overlap by ``fade_s`` and are cross-faded (raised-cosine weights that
    sum to one), so the result is ``sum(len) − (k − 1)·fade`` samples long (the fade is shortened
    to the shorter neighbour). ``gap_s > 0``: each piece fades out over ``fade_s``, ``gap_s`` of
    silence follows, the next piece fades in; ``sum(len) + (k − 1)·gap`` samples.
    """
    if fade_s < 0 or gap_s < 0:
        raise ValueError("fade_s and gap_s must be ≥ 0")
    arrays = [np.asarray(p, dtype=np.float32).reshape(-1) for p in pieces]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return np.zeros(0, dtype=np.float32)
    fade = int(round(fade_s * sample_rate))
    gap = int(round(gap_s * sample_rate))
    out = arrays[0].copy()
    for nxt in arrays[1:]:
        if gap:
            n = min(fade, out.size, nxt.size)
            head = nxt.copy()
            if n:
                ramp = _fade_in(n)
                out[-n:] *= ramp[::-1]
                head[:n] *= ramp
            out = np.concatenate([out, np.zeros(gap, dtype=np.float32), head])
            continue
        n = min(fade, out.size, nxt.size)
        if n == 0:
            out = np.concatenate([out, nxt])
            continue
        ramp = _fade_in(n)
        mixed = out[-n:] * (1.0 - ramp) + nxt[:n] * ramp
        out = np.concatenate([out[:-n], mixed.astype(np.float32), nxt[n:]])
    return out


class CrossfadeJoiner:
    """:func:`join_with_crossfade` for audio that arrives in pieces (streamed sentences).

    Feed each sentence's pieces with :meth:`add` and close it with :meth:`end_segment`; every call
    returns the samples that are final now (the last ``fade_s`` of the output wait for the next
    sentence's head). Everything returned, concatenated with :meth:`finish`, equals
    ``join_with_crossfade(sentences, …)``. Each join may have its own gap (a dialogue's pauses
    between turns, cross-fades between a turn's sentences), and :attr:`spans` says where every
    segment landed in the output: what captions are made of.
    """

    def __init__(self, sample_rate: int, fade_s: float = 0.02, gap_s: float = 0.0) -> None:
        if fade_s < 0 or gap_s < 0:
            raise ValueError("fade_s and gap_s must be ≥ 0")
        self._rate = sample_rate
        self.fade = int(round(fade_s * sample_rate))
        self.gap = int(round(gap_s * sample_rate))
        self._held = np.zeros(0, dtype=np.float32)  # the newest output samples, not sent yet
        self._out_len = 0  # output samples so far, sent or held
        self._head: list[np.ndarray] = []  # start of a sentence that still has to be joined to the output
        self._joining = False  # the current sentence follows earlier output and is not joined yet
        self._segment_len = 0
        self._next_gap = self.gap  # silence before the segment that starts next
        self._start = 0  # where the current segment's first sample landed in the output
        self.spans: list[tuple[int, int]] = []  # (first, one past last) output sample of every closed segment

    def add(self, samples: np.ndarray) -> np.ndarray:
        """More samples of the current sentence; returns the samples that can be sent now."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not x.size:
            return np.zeros(0, dtype=np.float32)
        first = self._segment_len == 0
        self._segment_len += x.size
        if self._joining:
            self._head.append(x)
            if sum(h.size for h in self._head) < self.fade:
                return np.zeros(0, dtype=np.float32)
            return self._join()
        if first:
            self._start = self._out_len
        self._out_len += x.size
        return self._release(np.concatenate([self._held, x]))

    def end_segment(self, gap_s: float | None = None) -> np.ndarray:
        """The current sentence is complete; the next :meth:`add` starts a new one.

        ``gap_s`` is the silence before the next segment (None: the joiner's own ``gap_s``; 0: a
        cross-fade). A segment that got no samples changes nothing.
        """
        out = self._join() if self._joining and self._head else np.zeros(0, dtype=np.float32)
        if self._segment_len:
            self._joining = self._out_len > 0
            self.spans.append((self._start, self._out_len))
            self._next_gap = self.gap if gap_s is None else int(round(gap_s * self._rate))
        self._segment_len = 0
        return out

    def finish(self) -> np.ndarray:
        """Close the last sentence and return every sample still held."""
        out = self.end_segment()
        rest, self._held = self._held, np.zeros(0, dtype=np.float32)
        return np.concatenate([out, rest])

    def _join(self) -> np.ndarray:
        head = np.concatenate(self._head)
        self._head = []
        self._joining = False
        held = self._held
        n = min(self.fade, self._out_len, head.size)
        gap = self._next_gap
        if gap:
            held = held.copy()
            head = head.copy()
            if n:
                ramp = _fade_in(n)
                held[-n:] *= ramp[::-1]
                head[:n] *= ramp
            self._start = self._out_len + gap
            self._out_len += gap + head.size
            return self._release(np.concatenate([held, np.zeros(gap, dtype=np.float32), head]))
        if n == 0:
            self._start = self._out_len
            self._out_len += head.size
            return self._release(np.concatenate([held, head]))
        ramp = _fade_in(n)
        mixed = (held[-n:] * (1.0 - ramp) + head[:n] * ramp).astype(np.float32)
        self._start = self._out_len - n
        self._out_len += head.size - n
        return self._release(np.concatenate([held[:-n], mixed, head[n:]]))

    def _release(self, buffer: np.ndarray) -> np.ndarray:
        keep = min(self.fade, buffer.size)
        self._held = buffer[buffer.size - keep :].copy()
        return buffer[: buffer.size - keep]


def _fade_in(n: int) -> np.ndarray:
    """Raised-cosine ramp 0 → 1 over n samples (centred samples, so neither end is exactly 0 or 1)."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n, dtype=np.float64) + 0.5) / n)).astype(np.float32)
