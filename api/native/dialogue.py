"""POST /dialogue: several registered voices taking turns, spoken as one audio (one engine job).

A dialogue comes either as JSON ``turns`` (voice, text, edit values, pause) or as a text
``script`` (one turn per line, ``[voice] (edit values) text``: :func:`runners.text.script.parse_script`),
never both. :meth:`DialogueRequest.to_job` makes it a :class:`runners.jobs.DialogueJob`, answered by the
one path of every front end (:func:`api.engine_calls.answer_job`): audio, or with ``captions``
a JSON body / server-sent events that say where each turn's sentences are. The engine checks
the voices, the edit values' use and the limits (turns, characters, voices).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response

from api.audio_out import AudioFormat
from api.captions import CAPTIONS_DESCRIPTION, CaptionFormat
from api.native.audio import answer_native
from runners.engine import EditXEngine
from runners.jobs import DEFAULT_PAUSE_MS, MAX_PAUSE_MS, DialogueJob, Turn, parse_instructions

SCRIPT_DESCRIPTION = ("the dialogue as text, one turn per line: `[voice] text` or `[voice] (edit values) text`, "
                      "e.g. `[alice] (happy) Hello there!`; edit values as in `instructions` "
                      "(comma-separated, see GET /vocabulary). Give `script` or `turns`, not both")


class TurnIn(BaseModel):
    """One turn of a JSON dialogue."""

    model_config = ConfigDict(extra="forbid")

    voice: str = Field(description="id of a voice registered with POST /v1/audio/voices")
    text: str = Field(description="what this voice says (language tags, sound tags and pronunciation marks "
                                  "as in /clone)")
    instructions: str = Field("", description="edit passes applied to this turn, comma-separated values of "
                                              "GET /vocabulary, e.g. 'happy' or 'whisper, slower'")
    pause_after_ms: int | None = Field(None, ge=0, le=MAX_PAUSE_MS,
                                       description=f"silence after this turn, 0–{MAX_PAUSE_MS} ms; "
                                                   f"empty = {DEFAULT_PAUSE_MS}")


class DialogueScript(BaseModel):
    """A dialogue: ``turns`` or ``script`` (exactly one), its audio format and seed (what a task takes too)."""

    model_config = ConfigDict(extra="forbid")

    turns: list[TurnIn] | None = Field(None, description="the dialogue as a list of turns, in order; "
                                                         "give `turns` or `script`, not both")
    script: str | None = Field(None, description=SCRIPT_DESCRIPTION)
    response_format: AudioFormat = Field("wav", description="wav, flac, mp3, opus, aac or pcm (16-bit LE mono)")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="fixes sampling; empty = random")

    @model_validator(mode="after")
    def _one_form(self) -> "DialogueScript":
        """A dialogue is written one way: a list of turns or a script."""
        if self.turns is not None and self.script is not None:
            raise ValueError("give either turns (a JSON list) or script (text), not both")
        if self.turns is None and self.script is None:
            raise ValueError("give the dialogue as turns (a JSON list of {voice, text}) or as script "
                             "(text, one `[voice] text` per line)")
        return self

    def to_job(self) -> DialogueJob:
        """The engine job; edit values and script lines are checked here, naming the turn or line at fault."""
        if self.script is not None:
            from runners.text.script import parse_script

            return DialogueJob(parse_script(self.script, field_name="script"), self.seed)
        turns = tuple(
            Turn(t.text, t.voice, parse_instructions(t.instructions, field_name=f"turns[{i}].instructions"),
                 t.pause_after_ms)
            for i, t in enumerate(self.turns or ()))
        return DialogueJob(turns, self.seed)


class DialogueRequest(DialogueScript):
    """POST /dialogue: the dialogue, and how to answer it (streamed, captioned)."""

    stream: bool = Field(False, description="send the audio as it is made, the first turn before the last is "
                                            "generated (not flac)")
    captions: CaptionFormat | None = Field(None, description=CAPTIONS_DESCRIPTION + "; dialogue cues carry "
                                                             "their voice, and `turns` says where each turn is")


def _headers(job: DialogueJob) -> dict[str, str]:
    voices = list(dict.fromkeys(t.voice for t in job.turns))
    return {"X-EditX-Turns": str(len(job.turns)), "X-EditX-Voices": ",".join(voices)}


async def dialogue(engine: EditXEngine, request: Request | None, body: DialogueRequest) -> Response:
    """POST /dialogue: one audio of every turn in order (captions on request)."""
    async def make() -> DialogueJob:
        return body.to_job()
    return await answer_native(engine, request, make, headers=_headers, stream=body.stream,  # type: ignore[arg-type]
                               fmt=body.response_format, captions=body.captions, filename="dialogue")
