"""Caption output formats: what a captioned answer says about where each spoken piece sits.

The engine measures every caption on the samples it actually produced
(:class:`runners.pipeline.chunks.Caption`); this module only writes them out, in one of three
formats a client asked for with ``captions``:

* ``json``: a list of :class:`CaptionOut` (index, start_s, end_s, text, turn, voice);
* ``srt``: SubRip cues (1-based numbers, ``HH:MM:SS,mmm``); a dialogue cue starts with its voice,
  ``alice: text``;
* ``vtt``: WebVTT (``WEBVTT`` header, ``HH:MM:SS.mmm``); a dialogue cue carries its voice as a
  voice span, ``<v alice>text``.

It also holds the pydantic models of captioned answers (the whole JSON body and the server-sent
events of a stream), so every route documents and answers the same shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from runners.pipeline.chunks import Caption

CaptionFormat = Literal["json", "srt", "vtt"]
CAPTION_FORMATS: tuple[str, ...] = ("json", "srt", "vtt")
CAPTIONS_DESCRIPTION = ("also return captions: json (a list), srt or vtt. The answer becomes a JSON body with the "
                        "audio base64-encoded (streamed: server-sent events speech.audio.delta, speech.caption, "
                        "speech.audio.done); empty = audio only")

# Server-sent event types of a captioned stream (the audio ones are /v1's stream_format=sse names).
EVENT_AUDIO = "speech.audio.delta"
EVENT_CAPTION = "speech.caption"
EVENT_DONE = "speech.audio.done"


class CaptionOut(BaseModel):
    """One caption as a client receives it (seconds into the answer's audio)."""

    index: int = Field(description="0-based position of the piece in the answer")
    start_s: float = Field(description="where its first sample is, seconds")
    end_s: float = Field(description="where its last sample is, seconds")
    text: str = Field(description="what is said")
    turn: int | None = Field(None, description="0-based dialogue turn (null outside a dialogue)")
    voice: str | None = Field(None, description="the turn's voice (null outside a dialogue)")


class TurnSpan(BaseModel):
    """Where one dialogue turn sits in the answer: from its first caption's start to its last one's end."""

    turn: int = Field(description="0-based turn, in script order")
    voice: str | None = Field(None, description="the turn's registered voice")
    start_s: float
    end_s: float


class CaptionedAudio(BaseModel):
    """A whole answer with captions: the audio file base64-encoded, its facts, and the captions."""

    audio: str = Field(description="the audio file in response_format, base64-encoded")
    response_format: str = Field(description="the audio format: wav, flac, mp3, opus, aac or pcm")
    media_type: str = Field(description="the audio's media type, e.g. audio/wav")
    sample_rate: int = Field(description="samples per second (24000)")
    duration_s: float = Field(description="length of the audio, seconds")
    caption_format: CaptionFormat
    captions: list[CaptionOut] | str = Field(description="a list for json; the SRT or WebVTT document otherwise")
    turns: list[TurnSpan] | None = Field(None, description="dialogues only: where each turn sits")


class AudioDeltaEvent(BaseModel):
    """Server-sent event: the next audio bytes of the stream, base64-encoded."""

    type: Literal["speech.audio.delta"] = EVENT_AUDIO
    audio: str


class CaptionEvent(BaseModel):
    """Server-sent event: one caption, sent as soon as its end is known (its audio was sent before it)."""

    type: Literal["speech.caption"] = EVENT_CAPTION
    caption: CaptionOut
    cue: str | None = Field(None, description="the caption as one SRT or WebVTT cue (null for json)")


class CaptionedDoneEvent(BaseModel):
    """Server-sent event, last: what the stream made, with every caption in the chosen format."""

    type: Literal["speech.audio.done"] = EVENT_DONE
    usage: dict[str, Any] | None = Field(None, description="/v1 only: input, output and total tokens")
    tokens: int = Field(description="codec ids generated")
    response_format: str
    media_type: str
    sample_rate: int
    duration_s: float
    caption_format: CaptionFormat
    captions: list[CaptionOut] | str
    turns: list[TurnSpan] | None = None


# ------------------------------------------------------------------ formats
def timestamp(seconds: float, sep: str) -> str:
    """``HH:MM:SS<sep>mmm``, rounded to the millisecond (``,`` for SRT, ``.`` for WebVTT)."""
    ms = max(0, int(round(seconds * 1000)))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def _one_line(text: str) -> str:
    """A cue's text on one line: a blank line would end the cue early in both formats."""
    return " ".join(text.split())


def srt_cue(caption: Caption, number: int) -> str:
    """One SubRip cue (``number`` is 1-based), ending with its blank line."""
    text = _one_line(caption.text).replace("-->", "->")
    if caption.voice:
        text = f"{caption.voice}: {text}"
    return f"{number}\n{timestamp(caption.start_s, ',')} --> {timestamp(caption.end_s, ',')}\n{text}\n\n"


def vtt_cue(caption: Caption, number: int) -> str:
    """One WebVTT cue with its identifier, the text escaped and the voice as ``<v name>``."""
    text = _one_line(caption.text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if caption.voice:
        text = f"<v {caption.voice}>{text}"
    return f"{number}\n{timestamp(caption.start_s, '.')} --> {timestamp(caption.end_s, '.')}\n{text}\n\n"


def to_srt(captions: Sequence[Caption]) -> str:
    return "".join(srt_cue(c, n) for n, c in enumerate(captions, 1))


def to_vtt(captions: Sequence[Caption]) -> str:
    return "WEBVTT\n\n" + "".join(vtt_cue(c, n) for n, c in enumerate(captions, 1))


def caption_out(caption: Caption) -> CaptionOut:
    return CaptionOut(index=caption.index, start_s=round(caption.start_s, 3), end_s=round(caption.end_s, 3),
                      text=caption.text, turn=caption.turn, voice=caption.voice)


def render(captions: Sequence[Caption], fmt: CaptionFormat) -> list[CaptionOut] | str:
    """Every caption in ``fmt``: a list of models for json, the document's text otherwise."""
    if fmt == "srt":
        return to_srt(captions)
    if fmt == "vtt":
        return to_vtt(captions)
    return [caption_out(c) for c in captions]


def cue(caption: Caption, number: int, fmt: CaptionFormat) -> str | None:
    """One caption as the chosen format's cue (what a stream's caption event carries); None for json."""
    if fmt == "srt":
        return srt_cue(caption, number)
    if fmt == "vtt":
        return vtt_cue(caption, number)
    return None


def turn_spans(captions: Iterable[Caption]) -> list[TurnSpan] | None:
    """Each dialogue turn's span from its sentence captions, in turn order; None outside a dialogue."""
    spans: dict[int, TurnSpan] = {}
    for c in captions:
        if c.turn is None:
            continue
        span = spans.get(c.turn)
        if span is None:
            spans[c.turn] = TurnSpan(turn=c.turn, voice=c.voice, start_s=round(c.start_s, 3), end_s=round(c.end_s, 3))
        else:
            span.start_s = min(span.start_s, round(c.start_s, 3))
            span.end_s = max(span.end_s, round(c.end_s, 3))
    return [spans[k] for k in sorted(spans)] if spans else None
