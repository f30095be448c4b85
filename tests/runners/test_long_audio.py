"""Cutting a long recording at pauses: pieces the model can edit, silences kept, no loud audio dropped."""

from __future__ import annotations

import math
import os
import random
import time

import numpy as np
import pytest

from runners.pipeline.long_audio import LOUD_WINDOW_S, AudioPiece, cut_at_pauses, gaps, share_transcript

SR = 16000


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), dtype=np.float32)


def _tone(seconds: float, amplitude: float = 0.3, hz: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _noise(seconds: float, amplitude: float = 0.2, seed: int = 0) -> np.ndarray:
    return (amplitude * np.random.default_rng(seed).uniform(-1, 1, round(seconds * SR))).astype(np.float32)


def _s(seconds: float) -> int:
    return round(seconds * SR)


def _loud_windows_uncovered(x: np.ndarray, sr: int, pieces: list[AudioPiece]) -> list[float]:
    """Starts (s) of LOUD_WINDOW_S windows above -40 dBFS RMS not wholly inside the pieces, checked at every sample."""
    window = min(len(x), round(LOUD_WINDOW_S * sr))
    if window == 0:
        return []
    cum = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    loud = (cum[window:] - cum[:-window]) / window > 10 ** (-40 / 10)
    outside = np.ones(len(x), dtype=np.int64)
    for p in pieces:
        outside[p.start: p.end] = 0
    out_cum = np.concatenate([[0], np.cumsum(outside)])
    missed = loud & ((out_cum[window:] - out_cum[:-window]) > 0)
    return [i / sr for i in np.flatnonzero(missed)[:5]]


def _check_invariants(x: np.ndarray, sr: int, pieces: list[AudioPiece], max_piece_s: float) -> None:
    for p in pieces:
        assert 0 <= p.start < p.end <= len(x)
        assert p.length == p.end - p.start <= math.floor(max_piece_s * sr)
    for a, b in zip(pieces, pieces[1:]):
        assert a.end <= b.start
    assert _loud_windows_uncovered(x, sr, pieces) == []
    silence = gaps(pieces, len(x))
    assert len(silence) == len(pieces) + 1 and min(silence) >= 0
    assert sum(silence) + sum(p.length for p in pieces) == len(x)


# ------------------------------------------------------------------ pauses and grouping
def test_speech_separated_by_long_pauses_is_grouped_up_to_the_limit_and_pauses_stay_out() -> None:
    x = np.concatenate([_silence(3), _tone(10), _silence(2), _tone(10), _silence(3), _tone(8), _silence(4)])
    segments = [(3.0, 13.0, "one two three"), (15.0, 25.0, "four five"), (28.0, 36.0, "six")]
    pieces = cut_at_pauses(x, SR, segments)
    assert [p.text for p in pieces] == ["one two three four five", "six"]
    first, second = pieces
    # the first two segments share a piece (22 s plus edges), the pause inside it included
    assert first.start <= _s(3.0 - 0.15) and first.end >= _s(25.0 + 0.15)
    # the pause between the pieces and the silence at both ends belong to no piece
    assert first.start > 0 and first.end < _s(28.0) - 1 and second.start > _s(25.0) and second.end < len(x)
    assert second.start <= _s(28.0 - 0.15) and second.end >= _s(36.0 + 0.15)
    _check_invariants(x, SR, pieces, 25.0)


def test_in_silence_a_piece_is_its_segments_padded_by_the_margin() -> None:
    x = _silence(40)  # nothing loud: the pieces are exactly Whisper's segments with their margins
    pieces = cut_at_pauses(x, SR, [(2.0, 6.0, "a"), (9.0, 12.0, "b"), (30.0, 31.0, "c")], max_piece_s=8.0)
    assert [(p.start, p.end, p.text) for p in pieces] == [
        (_s(1.85), _s(6.15), "a"),
        (_s(8.85), _s(12.15), "b"),
        (_s(29.85), _s(31.15), "c"),
    ]
    wide = cut_at_pauses(x, SR, [(2.0, 6.0, "a"), (9.0, 12.0, "b")], max_piece_s=8.0, margin_s=0.5)
    assert [(p.start, p.end) for p in wide] == [(_s(1.5), _s(6.5)), (_s(8.5), _s(12.5))]


def test_margins_are_clipped_to_the_audio() -> None:
    x = _silence(10)
    (piece,) = cut_at_pauses(x, SR, [(0.0, 9.95, "all of it")])
    assert (piece.start, piece.end) == (0, len(x))


def test_segments_too_close_for_one_piece_are_cut_between_them_without_overlap() -> None:
    x = _silence(40)
    segments = [(5.0, 20.0, "first part"), (20.1, 30.0, "second part")]
    first, second = cut_at_pauses(x, SR, segments)
    assert first.text == "first part" and second.text == "second part"
    assert first.start == _s(4.85) and second.end == _s(30.15)
    assert first.end == second.start and _s(20.0) <= first.end <= _s(20.1)  # margins give way to the neighbour


def test_continuous_speech_is_cut_at_the_quietest_point_between_segments() -> None:
    # Loud throughout except one quiet stretch between two segments: the cut goes there.
    x = np.concatenate([_noise(12, seed=1), _noise(0.6, amplitude=0.02, seed=2), _noise(12, seed=3),
                        _noise(0.3, amplitude=0.001, seed=4), _noise(11.1, seed=5)])
    segments = [(0.0, 12.1, "a b"), (12.5, 24.6, "c d"), (24.7, 36.0, "e f")]
    pieces = cut_at_pauses(x, SR, segments)
    assert [p.text for p in pieces] == ["a b c d", "e f"]
    assert pieces[0].end == pieces[1].start and _s(24.6) <= pieces[0].end <= _s(24.7)
    _check_invariants(x, SR, pieces, 25.0)


# ------------------------------------------------------------------ audio Whisper did not cover
def test_a_segment_longer_than_a_piece_is_cut_at_its_quietest_frames_in_the_last_third() -> None:
    parts = [_noise(10, seed=1), _silence(0.2), _noise(9.8, seed=2),  # dip at 10 s: too early for a piece
             _silence(0.1), _noise(2.9, seed=3), _silence(0.2), _noise(16.8, seed=4),  # dips at 20 s and 23 s
             _silence(0.2), _noise(20, seed=5)]  # dip at 40 s
    x = np.concatenate(parts)
    words = " ".join(f"w{i}" for i in range(60))
    pieces = cut_at_pauses(x, SR, [(0.0, 60.0, words)])
    cuts = [p.end for p in pieces[:-1]]
    assert len(pieces) == 3
    assert _s(23.0) <= cuts[0] <= _s(23.2)  # the quietest frame of [16.7 s, 25 s]: the longer, later dip
    assert _s(40.0) <= cuts[1] <= _s(40.2)
    assert pieces[0].start == 0 and pieces[-1].end == len(x)
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:]))  # nothing of the speech is dropped
    # the long segment's words are shared by how much of it each piece holds, each used once in order
    assert " ".join(p.text for p in pieces).split() == words.split()
    assert [len(p.text.split()) for p in pieces] == [23, 17, 20]
    _check_invariants(x, SR, pieces, 25.0)


def test_audio_whisper_heard_nothing_in_is_still_covered() -> None:
    x = np.concatenate([_silence(2), _noise(50, seed=7), _silence(3), _tone(4), _silence(2)])
    pieces = cut_at_pauses(x, SR, [])
    assert pieces and all(p.text == "" for p in pieces)
    assert all(p.length <= 25 * SR for p in pieces)
    assert pieces[0].start > 0 and pieces[-1].end < len(x)  # the quiet ends stay silence
    _check_invariants(x, SR, pieces, 25.0)


def test_loud_audio_outside_every_segment_gets_a_piece_and_quiet_audio_does_not() -> None:
    x = np.concatenate([_tone(5), _silence(5), _noise(3, seed=9), _silence(5),
                        _noise(5, amplitude=0.003, seed=10), _silence(2)])  # -50 dBFS hiss at 18-23 s
    pieces = cut_at_pauses(x, SR, [(0.0, 5.0, "hello")], max_piece_s=8.0)
    assert [p.text for p in pieces] == ["hello", ""]
    music = pieces[1]
    assert music.start <= _s(10.0) and music.end >= _s(13.0) and music.end < _s(18.0)
    _check_invariants(x, SR, pieces, 8.0)


# ------------------------------------------------------------------ short pieces, odd segment lists
def _short_then_long(dip_s: float) -> np.ndarray:
    """A quiet 0.3 s answer at 1 s, then loud audio Whisper did not hear from 3 s on, quietest at ``dip_s``."""
    return np.concatenate([_silence(3), _noise(dip_s - 3, seed=1), _silence(0.05), _noise(45 - dip_s, seed=2)])


def test_a_piece_shorter_than_the_minimum_joins_a_neighbour_when_it_fits() -> None:
    segments = [(1.0, 1.3, "yes")]
    x = _short_then_long(22.0)
    joined = cut_at_pauses(x, SR, segments)
    assert joined[0].text == "yes" and joined[0].start == _s(0.85) and _s(22.0) <= joined[0].end <= _s(22.2)
    _check_invariants(x, SR, joined, 25.0)
    # without a minimum the answer is a piece of its own
    alone = cut_at_pauses(x, SR, segments, min_piece_s=0.0)
    assert (alone[0].start, alone[0].end, alone[0].text) == (_s(0.85), _s(1.45), "yes")
    assert _s(22.0) <= alone[1].end <= _s(22.2)
    # …and when joining would make a piece over the limit, it stays short
    x = _short_then_long(26.0)
    apart = cut_at_pauses(x, SR, segments)
    assert (apart[0].start, apart[0].end, apart[0].text) == (_s(0.85), _s(1.45), "yes")
    _check_invariants(x, SR, apart, 25.0)


def test_segments_are_sorted_and_clipped_to_the_audio() -> None:
    x = _silence(20)
    segments = [(12.0, 14.0, " later"), (-3.0, 2.0, " first"), (18.0, 25.0, " end"), (30.0, 31.0, " ghost"),
                (-5.0, -1.0, " before")]
    pieces = cut_at_pauses(x, SR, segments, max_piece_s=5.0)
    assert [(p.start, p.end, p.text) for p in pieces] == [
        (0, _s(2.15), "first"),
        (_s(11.85), _s(14.15), "later"),
        (_s(17.85), len(x), "end"),
    ]


def test_overlapping_segments_stay_in_one_piece() -> None:
    x = _silence(30)
    pieces = cut_at_pauses(x, SR, [(1.0, 5.0, "a"), (4.0, 8.0, "b"), (7.5, 9.0, "c")], max_piece_s=10.0)
    assert [(p.start, p.end, p.text) for p in pieces] == [(_s(0.85), _s(9.15), "a b c")]


def test_silent_audio_without_segments_has_no_pieces() -> None:
    x = _silence(45)
    assert cut_at_pauses(x, SR, []) == []
    assert gaps([], len(x)) == [len(x)]
    assert cut_at_pauses(np.zeros(0, dtype=np.float32), SR, []) == []


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        cut_at_pauses(np.zeros((2, 100)), SR, [])
    with pytest.raises(ValueError):
        cut_at_pauses(np.zeros(100), SR, [], max_piece_s=0.0)


# ------------------------------------------------------------------ gaps
def test_gaps_are_the_silences_around_and_between_pieces() -> None:
    pieces = [AudioPiece(100, 300, "a"), AudioPiece(300, 500, "b"), AudioPiece(800, 900, "")]
    assert gaps(pieces, 1000) == [100, 0, 300, 100]
    with pytest.raises(ValueError):
        gaps([AudioPiece(0, 300, ""), AudioPiece(200, 400, "")], 1000)
    with pytest.raises(ValueError):
        gaps([AudioPiece(0, 300, "")], 200)


# ------------------------------------------------------------------ sharing the user's transcript
def test_a_transcript_is_shared_by_the_words_whisper_heard_in_each_piece() -> None:
    pieces = [AudioPiece(0, 10, "hello there"), AudioPiece(20, 30, ""), AudioPiece(40, 50, "how are you doing")]
    shared = share_transcript("Hello there, friend. How are you doing today?", pieces)
    assert shared == ["Hello there, friend.", "", "How are you doing today?"]  # 9 words, shared 2 : 0 : 4


def test_every_word_is_used_once_in_order() -> None:
    pieces = [AudioPiece(0, 10, "a b c"), AudioPiece(10, 20, "d"), AudioPiece(30, 40, "e f g h")]
    text = "one two three four five six seven eight nine ten eleven"
    shared = share_transcript(text, pieces)
    assert " ".join(s for s in shared if s).split() == text.split()
    assert [len(s.split()) for s in shared] == [4, 2, 5]  # 11 words as 3 : 1 : 4, rounded where they add up


def test_without_heard_words_the_transcript_is_shared_by_length() -> None:
    pieces = [AudioPiece(0, 300, ""), AudioPiece(400, 500, "")]
    assert share_transcript("a b c d e f g h", pieces) == ["a b c d e f", "g h"]
    assert share_transcript("", pieces) == ["", ""]
    assert share_transcript("a b", []) == []


def test_chinese_is_shared_by_characters_and_keeps_its_punctuation() -> None:
    pieces = [AudioPiece(0, 10, "你好"), AudioPiece(10, 20, "今天天气")]
    assert share_transcript("你好，今天天气不错。", pieces) == ["你好，今", "天天气不错。"]


# ------------------------------------------------------------------ random recordings
def _random_recording(rng: random.Random, sr: int) -> tuple[np.ndarray, list[tuple[float, float, str]], list[str]]:
    """Bursts of tone or noise between silences, and segments for some bursts (some wrong, some outside)."""
    parts, bursts, position = [], [], 0
    nrng = np.random.default_rng(rng.randrange(2**32))
    while position < rng.uniform(5, 150) * sr:
        length = max(1, int(rng.choice([rng.uniform(0.02, 0.6), rng.uniform(0.5, 8), rng.uniform(8, 45)]) * sr))
        kind = rng.choice(["silence", "silence", "hiss", "tone", "noise"])
        amplitude = {"silence": 0.0, "hiss": rng.uniform(0.0, 0.012)}.get(kind, rng.uniform(0.005, 0.8))
        if kind == "tone":
            part = amplitude * np.sin(2 * np.pi * rng.uniform(80, 1000) * np.arange(length) / sr)
        else:
            part = amplitude * nrng.uniform(-1, 1, length)
        if amplitude > 0.02:
            bursts.append((position / sr, (position + length) / sr))
        parts.append(part.astype(np.float32))
        position += length
    x = np.concatenate(parts)
    duration = len(x) / sr
    segments, words = [], []
    for start, end in bursts:
        if rng.random() < 0.3:
            continue  # Whisper missed it
        start, end = start + rng.uniform(-0.2, 0.2), end + rng.uniform(-0.2, 0.2)
        if segments and start < segments[-1][1]:
            continue  # keep the heard segments apart, so the words have one order
        said = [f"w{len(words) + i}" for i in range(rng.randint(0, 6))]
        if max(start, end) <= 0 or min(start, end) >= duration:
            said = ["ghost"]  # jittered wholly outside the audio: nobody can hear it
        else:
            words += said
        segments.append((start, end, " " + " ".join(said)))
    if rng.random() < 0.3:
        segments.append((duration + 1.0, duration + 3.0, " ghost"))
    rng.shuffle(segments)
    return x, segments, words


def test_random_recordings_keep_every_invariant() -> None:
    seed = int(os.environ.get("LONG_AUDIO_SEED", time.time_ns() % 2**32))  # set it to replay a failure
    print(f"long-audio seed {seed}")
    rng = random.Random(seed)
    sr = 8000
    for _ in range(25):
        x, segments, words = _random_recording(rng, sr)
        max_piece_s = rng.uniform(2.0, 25.0)
        margin_s, min_piece_s = rng.uniform(0.0, 0.3), rng.uniform(0.0, 2.0)
        pieces = cut_at_pauses(x, sr, segments, max_piece_s=max_piece_s, margin_s=margin_s, min_piece_s=min_piece_s)
        try:
            _check_invariants(x, sr, pieces, max_piece_s)
            # every heard segment, with its margin, lies inside the pieces
            inside = np.zeros(len(x), dtype=bool)
            for p in pieces:
                inside[p.start: p.end] = True
            for start, end, said in segments:
                if said == " ghost":
                    continue
                start, end = sorted((start, end))
                a = min(max(0, math.floor((start - margin_s) * sr)), len(x))
                b = min(max(0, math.ceil((end + margin_s) * sr)), len(x))
                assert inside[a + 1: b - 1].all()
            # a piece under the minimum is one no neighbour could take in within the limit
            limit = math.floor(max_piece_s * sr)
            for i, p in enumerate(pieces):
                if p.length < round(min_piece_s * sr):
                    assert i == 0 or p.end - pieces[i - 1].start > limit
                    assert i + 1 == len(pieces) or pieces[i + 1].end - p.start > limit
            # the heard words land in the pieces once each, in order; what lies outside the audio does not
            assert " ".join(p.text for p in pieces).split() == words
            shared = share_transcript(" ".join(words), pieces)
            assert " ".join(shared).split() == words and len(shared) == len(pieces)
        except AssertionError:
            print(f"failed with seed {seed}, max_piece_s={max_piece_s}, margin_s={margin_s}, min={min_piece_s}")
            raise


def test_a_pause_within_reach_is_cut_at_rather_than_a_later_gap_between_words() -> None:
    """Word timestamps abut inside a sentence: a piece ends at the sentence's pause, not mid-sentence."""
    x = np.concatenate([_silence(0.5), _noise(9.5, seed=3), _silence(1.0), _noise(19.0, seed=4), _silence(0.5)])
    words = [(t, t + 0.5, "word") for t in np.arange(0.5, 9.99, 0.5)]
    words += [(t, t + 0.5, "word") for t in np.arange(11.0, 29.99, 0.5)]
    pieces = cut_at_pauses(x, SR, words)
    _check_invariants(x, SR, pieces, 25.0)
    assert _s(10.0) <= pieces[0].end <= _s(10.2)  # the pause, not a gap between words near 25 s
    assert _s(10.8) <= pieces[1].start <= _s(11.0)
    assert gaps(pieces, len(x))[1] >= _s(0.6)  # kept as silence
