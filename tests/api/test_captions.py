"""Caption formats: SRT and WebVTT that a player reads back (numbers, times, voices), JSON, turn spans."""

from __future__ import annotations

import pytest

from api.captions import render, timestamp, to_srt, to_vtt, turn_spans
from runners.pipeline.chunks import Caption
from tests.subtitles import parse_srt, parse_vtt

DIALOGUE = [
    Caption(0, 0.0, 1.2346, "Hello there.", turn=0, voice="alice"),
    Caption(1, 1.2146, 2.5, "How are you?", turn=0, voice="alice"),  # joined by a 20 ms cross-fade
    Caption(2, 2.8, 3661.0016, "Fine, <thanks> & you?", turn=1, voice="bob"),
    Caption(3, 3661.3, 3662.0, "Good.", turn=2, voice="alice"),
]


def test_timestamps_round_to_the_millisecond() -> None:
    assert timestamp(0, ",") == "00:00:00,000"
    assert timestamp(3661.0016, ",") == "01:01:01,002"
    assert timestamp(59.9996, ".") == "00:01:00.000"


def test_srt_reads_back_with_numbers_times_and_voices() -> None:
    cues = parse_srt(to_srt(DIALOGUE))
    assert [c.number for c in cues] == [1, 2, 3, 4]
    assert [c.voice for c in cues] == ["alice", "alice", "bob", "alice"]
    assert cues[2].text == "Fine, <thanks> & you?"
    assert [c.start_s for c in cues] == [0.0, 1.215, 2.8, 3661.3]
    assert cues[2].end_s == pytest.approx(3661.002)
    assert all(c.end_s > c.start_s for c in cues)
    assert [c.start_s for c in cues] == sorted(c.start_s for c in cues)


def test_vtt_reads_back_with_voice_spans_and_escaped_text() -> None:
    text = to_vtt(DIALOGUE)
    assert "<v bob>Fine, &lt;thanks&gt; &amp; you?" in text
    cues = parse_vtt(text)
    assert len(cues) == 4 and [c.voice for c in cues] == ["alice", "alice", "bob", "alice"]
    assert cues[2].text == "Fine, <thanks> & you?"
    assert cues[0].end_s == pytest.approx(1.235, abs=0.001)


def test_captions_outside_a_dialogue_carry_no_voice() -> None:
    plain = [Caption(0, 0.0, 1.0, "One line\nover two."), Caption(1, 1.0, 2.0, "An arrow --> here.")]
    srt = parse_srt(to_srt(plain))
    assert [(c.text, c.voice) for c in srt] == [("One line over two.", None), ("An arrow -> here.", None)]
    assert [c.voice for c in parse_vtt(to_vtt(plain))] == [None, None]
    assert turn_spans(plain) is None
    assert parse_srt(to_srt([])) == [] and parse_vtt(to_vtt([])) == []


def test_json_and_turn_spans() -> None:
    listed = render(DIALOGUE, "json")
    assert isinstance(listed, list)
    assert [c.model_dump() for c in listed][2] == {"index": 2, "start_s": 2.8, "end_s": 3661.002,
                                                    "text": "Fine, <thanks> & you?", "turn": 1, "voice": "bob"}
    spans = turn_spans(DIALOGUE)
    assert spans is not None
    assert [(s.turn, s.voice, s.start_s, s.end_s) for s in spans] == [
        (0, "alice", 0.0, 2.5), (1, "bob", 2.8, 3661.002), (2, "alice", 3661.3, 3662.0)]
