"""Cutting a recording longer than the model's 30 s window into pieces it can edit.

The editing model sees at most 30 s of audio, so a longer recording is edited piece by
piece. Pieces are cut where the speaker pauses, found from Whisper's segment timestamps,
so no word is split; the pauses between pieces are not edited at all but kept as silence
of the same length when the edited pieces are joined (:func:`gaps`).

Whisper can miss audio (music, noise, a language it did not hear) and can return a
single segment longer than a piece may be. Neither may cost the user audio: every loud
stretch is covered by some piece, and a stretch too long for one piece is cut at its
quietest 50 ms frame instead. This module is pure arithmetic on samples: no model, no I/O.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LOUD_DBFS = -40.0  # a 0.1 s window above this RMS is audio the user would miss if it became silence
LOUD_WINDOW_S = 0.1  # short: a longer window reaches past a word into the pause after it, and pauses under
#                     twice its length could no longer be kept as silence
QUIET_FRAME_S = 0.05  # forced cuts land in the middle of the quietest frame of this length
_BLOCK_S = 0.01  # resolution of the energy bookkeeping; loud marks overshoot by at most one block

# A "word" for proportional splits: a Chinese/Japanese character (those scripts write no spaces)
# or a run of other non-space characters, with its leading space and any punctuation after it.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"\s*(?:[{_CJK}]|[^\s{_CJK}]+)[^\w\s]*")


@dataclass(frozen=True)
class AudioPiece:
    """One span of the source that is edited on its own, with the transcript heard in it."""

    start: int  # first sample of the piece in the source
    end: int  # one past its last sample
    text: str  # what is said in it (the segments inside it, joined), may be ""

    @property
    def length(self) -> int:
        return self.end - self.start


# ------------------------------------------------------------------ words
def _words(text: str) -> list[str]:
    """The words of ``text``, each with the whitespace before it, so joining them gives the text back."""
    return _WORD.findall(text)


def _join(words: Sequence[str]) -> str:
    return "".join(words).strip()


def _share(count: int, weights: Sequence[int]) -> list[tuple[int, int]]:
    """Split ``count`` items in order into ``len(weights)`` runs in proportion to the weights.

    Cumulative rounding: every item is used once, and a zero weight gets an empty run.
    """
    total = sum(weights)
    bounds, running = [0], 0
    for weight in weights:
        running += weight
        bounds.append((2 * count * running + total) // (2 * total))
    return list(zip(bounds[:-1], bounds[1:]))


def share_transcript(text: str, pieces: Sequence[AudioPiece]) -> list[str]:
    """A transcript of the whole recording, split across ``pieces`` as Whisper heard the words.

    Each piece gets a share in proportion to the words Whisper heard in it (by piece length
    when it heard none), cut only between words: every word is used once, in order. The
    user's transcript is better than Whisper's, but only Whisper says where each word falls.
    Without pieces there is nothing to give words to: the answer is empty.
    """
    if not pieces:
        return []
    words = _words(text)
    weights = [len(_words(piece.text)) for piece in pieces]
    if sum(weights) == 0:
        weights = [max(piece.length, 0) for piece in pieces]
    if sum(weights) == 0:
        weights = [1] * len(pieces)
    return [_join(words[a:b]) for a, b in _share(len(words), weights)]


def gaps(pieces: Sequence[AudioPiece], total: int) -> list[int]:
    """Samples of silence before the first piece, between consecutive pieces and after the last.

    ``len(pieces) + 1`` values; with the pieces' lengths they add up to ``total``, which is how
    the edited pieces are laid back on a timeline of the source's length.
    """
    result, position = [], 0
    for piece in pieces:
        if piece.start < position or piece.end < piece.start:
            raise ValueError(f"pieces overlap or are out of order at samples {piece.start}-{piece.end}")
        result.append(piece.start - position)
        position = piece.end
    if position > total:
        raise ValueError(f"the last piece ends at sample {position}, after the recording's {total}")
    result.append(total - position)
    return result


# ------------------------------------------------------------------ energy
class _Energy:
    """Sums of squared samples in 10 ms blocks: loudness and quietest-frame questions in O(blocks)."""

    def __init__(self, samples: np.ndarray, sample_rate: int) -> None:
        self.total = len(samples)
        self.sample_rate = sample_rate
        self.block = max(1, round(sample_rate * _BLOCK_S))
        self.blocks = -(-self.total // self.block)
        per_block = np.zeros(self.blocks, dtype=np.float64)
        step = self.block * max(1, 2**20 // self.block)  # a few MiB at a time, not a float64 copy of an hour
        for start in range(0, self.total, step):
            chunk = np.asarray(samples[start: start + step], dtype=np.float64)
            whole = len(chunk) // self.block * self.block
            first = start // self.block
            per_block[first: first + whole // self.block] = np.square(chunk[:whole]).reshape(-1, self.block).sum(axis=1)
            if whole < len(chunk):
                per_block[-1] = float(np.square(chunk[whole:]).sum())
        self.cum = np.concatenate([[0.0], np.cumsum(per_block)])
        self.frame_blocks = max(1, round(sample_rate * QUIET_FRAME_S / self.block))

    def loud_spans(self) -> list[tuple[int, int]]:
        """Spans holding every LOUD_WINDOW_S window (at any sample offset) whose RMS is above :data:`LOUD_DBFS`.

        A window starting anywhere in block k lies inside blocks k … k + ceil(W / block), so
        when those blocks' energy is at most the threshold, no window starting in block k is
        loud; otherwise every window starting there is marked (an overshoot of < one block).
        """
        window = min(self.total, round(self.sample_rate * LOUD_WINDOW_S))
        if window <= 0:
            return []
        threshold = 10 ** (LOUD_DBFS / 10) * window
        last_block = (self.total - window) // self.block  # the last block a window may start in
        span_blocks = 1 + -(-window // self.block)
        k = np.arange(last_block + 1)
        energy = self.cum[np.minimum(k + span_blocks, self.blocks)] - self.cum[k]
        index = np.flatnonzero(energy > threshold)
        starts = index * self.block
        ends = np.minimum(self.total, (index + 1) * self.block - 1 + window)  # increasing with the index
        first = np.concatenate([[True], starts[1:] > ends[:-1]]) if len(index) else np.zeros(0, dtype=bool)
        last = np.concatenate([first[1:], [True]]) if len(index) else first
        return [(int(a), int(b)) for a, b in zip(starts[first], ends[last])]

    def quietest(self, lo: int, hi: int) -> int | None:
        """The middle of the quietest 50 ms frame inside [lo, hi] (the latest of equals); None if none fits."""
        first = -(-lo // self.block)
        last = hi // self.block - self.frame_blocks  # frame = blocks last … last + frame_blocks - 1
        last = min(last, self.total // self.block - self.frame_blocks)  # whole blocks only
        if last < first:
            return None
        k = np.arange(first, last + 1)
        energy = self.cum[k + self.frame_blocks] - self.cum[k]
        best = int(k[len(k) - 1 - int(np.argmin(energy[::-1]))])
        return best * self.block + self.frame_blocks * self.block // 2


# ------------------------------------------------------------------ cutting
def _units(segments: Sequence[tuple[float, float, str]], sample_rate: int, total: int) -> list[tuple[int, int, str]]:
    """Whisper's segments as sorted, disjoint sample spans inside the audio (overlapping ones merged)."""
    duration = total / sample_rate
    spans: list[tuple[int, int, str]] = []
    for segment in segments:
        lo, hi = sorted((float(segment[0]), float(segment[1])))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            continue
        a, b = min(max(lo, 0.0), duration), min(max(hi, 0.0), duration)
        if (hi > lo and b <= a) or (hi == lo and not 0.0 <= lo < duration):
            continue  # wholly outside the audio: nothing of it can be heard
        start, end = min(math.floor(a * sample_rate), total), min(math.ceil(b * sample_rate), total)
        spans.append((start, end, str(segment[2]).strip()))
    spans.sort(key=lambda s: (s[0], s[1]))
    merged: list[tuple[int, int, str]] = []
    for start, end, text in spans:
        if merged and start < merged[-1][1]:
            a, b, t = merged[-1]
            merged[-1] = (a, max(b, end), " ".join(x for x in (t, text) if x))
        else:
            merged.append((start, end, text))
    return merged


def _merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of ``spans`` as sorted disjoint spans (touching ones joined, empty ones dropped)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _greedy(
    components: list[tuple[int, int]], boundaries: list[tuple[int, int, int]], energy: _Energy, max_len: int
) -> list[tuple[int, int]]:
    """Pieces covering every component, each ending at the latest pause within the limit.

    A piece ends at the end of a component (the pause after it stays out of every piece,
    kept as silence); only where no pause is within reach does it end inside a component,
    at the latest point between two segments (the next piece starts there). Where neither
    fits, it ends at the quietest frame of the last third of its length.
    """
    pieces: list[tuple[int, int]] = []
    ci, p0 = 0, components[0][0] if components else 0
    while ci < len(components):
        limit = p0 + max_len
        best: tuple[int, int, int] | None = None  # (end, next component index, next start)
        j = ci
        while j < len(components) and components[j][1] <= limit:
            best = (components[j][1], j + 1, components[j + 1][0] if j + 1 < len(components) else -1)
            j += 1
        latest: tuple[int, int, int] | None = None  # (lo, hi, component) of the last boundary within reach
        for seg_end, next_start, comp in boundaries:
            if seg_end > limit:
                break
            hi = min(next_start, limit, components[comp][1] - 1)
            lo = max(seg_end, p0 + 1)
            if comp >= ci and seg_end > p0 and lo <= hi:  # a boundary already cut at lies behind p0
                latest = (lo, hi, comp)
        if latest is not None and best is None:  # no pause within reach: between two words it is
            lo, hi, comp = latest
            cut = energy.quietest(lo, hi)
            cut = (lo + hi) // 2 if cut is None else cut
            best = (cut, comp, cut)
        if best is None:  # nothing to cut at between segments: cut the stretch where it is quietest
            lo = p0 + -(-2 * max_len // 3)
            cut = energy.quietest(lo, limit)
            best = (limit if cut is None else cut, ci, limit if cut is None else cut)
        end, ci, next_p0 = best
        pieces.append((p0, end))
        p0 = next_p0
    return pieces


def _merge_short(pieces: list[tuple[int, int]], min_len: int, max_len: int) -> list[tuple[int, int]]:
    """Pieces shorter than ``min_len`` joined to the neighbour giving the shorter result, within the limit."""
    pieces = list(pieces)
    changed = True
    while changed:
        changed = False
        for i, (start, end) in enumerate(pieces):
            if end - start >= min_len:
                continue
            options = []
            if i > 0 and end - pieces[i - 1][0] <= max_len:
                options.append((end - pieces[i - 1][0], i - 1))
            if i + 1 < len(pieces) and pieces[i + 1][1] - start <= max_len:
                options.append((pieces[i + 1][1] - start, i))
            if options:
                _, first = min(options)
                pieces[first: first + 2] = [(pieces[first][0], pieces[first + 1][1])]
                changed = True
                break
    return pieces


def _texts(units: list[tuple[int, int, str]], pieces: list[tuple[int, int]]) -> list[str]:
    """Each piece's transcript: the segments inside it; a segment cut across pieces shares its words by overlap."""
    parts: list[list[str]] = [[] for _ in pieces]
    for start, end, text in units:
        if not text or not pieces:
            continue
        overlaps = [max(0, min(end, b) - max(start, a)) for a, b in pieces]
        if sum(overlaps) == 0:  # a zero-length segment: the piece nearest to it
            middle = (start + end) / 2
            overlaps = [0] * len(pieces)
            overlaps[min(range(len(pieces)), key=lambda i: abs((pieces[i][0] + pieces[i][1]) / 2 - middle))] = 1
        words = _words(text)
        for i, (a, b) in enumerate(_share(len(words), overlaps)):
            if b > a:
                parts[i].append(_join(words[a:b]))
    return [" ".join(p) for p in parts]


def cut_at_pauses(
    samples: np.ndarray,
    sample_rate: int,
    segments: Sequence[tuple[float, float, str]],
    max_piece_s: float = 25.0,
    margin_s: float = 0.15,
    min_piece_s: float = 1.0,
) -> list[AudioPiece]:
    """The pieces to edit of a long recording, in order, given Whisper's ``(start_s, end_s, text)`` segments.

    ``samples`` are mono floats in [-1, 1] (loudness is measured against full scale).

    Every piece is at most ``max_piece_s`` long and covers whole segments padded by
    ``margin_s`` (clipped to the audio and to its neighbour); consecutive segments share a
    piece while it fits. Every loud 0.1 s window of the audio (see :data:`LOUD_DBFS`) lies in
    some piece, heard by Whisper or not; a stretch too long for one piece with no pause between
    segments to cut at is cut at its quietest 50 ms frame in the last third of a piece's
    length. Pieces shorter than ``min_piece_s`` join a neighbour when the result fits. What
    no piece covers is quiet, and is kept as silence (:func:`gaps`).
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"cut_at_pauses takes mono samples (one dimension), got shape {x.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    max_len = math.floor(max_piece_s * sample_rate)
    if max_len < 1:
        raise ValueError(f"max_piece_s={max_piece_s} is shorter than one sample")
    total = len(x)
    margin = max(0, round(margin_s * sample_rate))
    energy = _Energy(x, sample_rate)
    units = _units(segments, sample_rate, total)
    components = _merge_spans(
        [(max(0, s - margin), min(total, e + margin)) for s, e, _ in units] + energy.loud_spans()
    )

    starts = [a for a, _ in components]

    def component_of(position: int) -> int | None:
        i = bisect.bisect_right(starts, position) - 1
        return i if i >= 0 and components[i][1] >= position else None

    boundaries = []  # (end of a segment, start of the next, component) where no pause separates them
    for (_, e1, _), (s2, _, _) in zip(units, units[1:]):
        c1, c2 = component_of(e1), component_of(s2)
        if c1 is not None and c1 == c2:
            boundaries.append((e1, s2, c1))
    spans = _merge_short(_greedy(components, boundaries, energy, max_len), round(min_piece_s * sample_rate), max_len)
    return [AudioPiece(a, b, t) for (a, b), t in zip(spans, _texts(units, spans))]
