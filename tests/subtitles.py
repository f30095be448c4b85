"""Strict little SRT and WebVTT readers for the tests (not a test module): what a player would read."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SRT_TIME = r"(\d{2}):(\d{2}):(\d{2}),(\d{3})"
_VTT_TIME = r"(\d{2}):(\d{2}):(\d{2})\.(\d{3})"


@dataclass(frozen=True)
class Cue:
    number: int
    start_s: float
    end_s: float
    text: str
    voice: str | None


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_srt(text: str) -> list[Cue]:
    """SubRip: blocks of number, ``start --> end``, one text line; fails on anything else."""
    assert text.endswith("\n\n") or text == "", repr(text[-20:])
    cues = []
    for block in [b for b in text.split("\n\n") if b]:
        lines = block.split("\n")
        assert len(lines) == 3, block
        times = re.fullmatch(f"{_SRT_TIME} --> {_SRT_TIME}", lines[1])
        assert times, lines[1]
        g = times.groups()
        voice, sep, said = lines[2].partition(": ")
        cues.append(Cue(int(lines[0]), _seconds(*g[:4]), _seconds(*g[4:]), said if sep else lines[2],
                        voice if sep else None))
    return cues


def parse_vtt(text: str) -> list[Cue]:
    """WebVTT: the header, then blocks of identifier, ``start --> end``, one text line (``<v name>`` for a voice)."""
    assert text.startswith("WEBVTT\n\n"), repr(text[:20])
    cues = []
    for block in [b for b in text[len("WEBVTT\n\n"):].split("\n\n") if b]:
        lines = block.split("\n")
        assert len(lines) == 3, block
        times = re.fullmatch(f"{_VTT_TIME} --> {_VTT_TIME}", lines[1])
        assert times, lines[1]
        g = times.groups()
        span = re.fullmatch(r"<v ([^>]+)>(.*)", lines[2])
        said = span.group(2) if span else lines[2]
        said = said.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        cues.append(Cue(int(lines[0]), _seconds(*g[:4]), _seconds(*g[4:]), said, span.group(1) if span else None))
    return cues
