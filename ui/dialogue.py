"""The Dialogue tab's logic: a script in the text form, a helper that writes its lines, one engine run.

The script box holds what :func:`runners.text.script.parse_script` reads (one turn per line,
``[voice] (edits) text``); the helper row writes lines with
:func:`~runners.text.script.format_script`, so what it adds always parses back. Generating
parses the script and hands one :class:`~runners.jobs.DialogueJob` to ``engine.run``, as the
API's dialogue route does; the engine checks the limits and names the turn (and its line) in
its errors. Plain functions, so tests drive them without a browser.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runners.engine import EditXEngine
from runners.errors import InvalidInputError
from runners.jobs import DialogueJob, EditPass, Progress, Turn, parse_instructions
from runners.text.script import format_script, parse_script
from runners.text.vocab import VOCABULARY
from ui.outputs import summary, write_captions, write_output

SCRIPT_HELP = (
    "One turn per line: `[voice] text`, or `[voice] (happy, whisper) text` to edit that line after it is spoken. "
    "A blank line, or a line like `[pause 1.5s]`, makes a longer pause after the line above; `#` starts a comment. "
    "Voices are the registered ones (save one under *Voices* in the first tab). Errors name the line."
)
PLACEHOLDER_VOICES = ("alice", "bob")  # the example's names while no voice is registered


def edit_choices() -> list[tuple[str, str]]:
    """(label, script value) of every edit a script line may carry, typed so no value is ambiguous.

    Paralinguistic edits are left out: they need a tagged transcript, which a line's edits cannot carry.
    """
    choices: list[tuple[str, str]] = []
    for spec in VOCABULARY.edit_types:
        if spec.values:
            choices += [(f"{value} ({spec.name})", f"{spec.name}:{value}") for value in spec.values]
        elif not spec.needs_target_text:
            choices.append((spec.name, spec.name))
    return choices


def example_script(voice_ids: Sequence[str]) -> str:
    """A short example in the registered voices (the first two), or in placeholder names while there are none."""
    names = list(voice_ids)[:2]
    note = "" if names else "# Save voices first (Voices, in the first tab); alice and bob are placeholders.\n"
    first, second = (names + names[:1])[:2] if names else PLACEHOLDER_VOICES
    turns = (
        Turn("Good morning! Did you sleep well?", first),
        Turn("Not really, the neighbours had a party.", second, pause_after_ms=800),
        Turn("Then let us get you a strong coffee.", first, (EditPass("emotion", "happy"),)),
    )
    return "# [voice] (edits) text; [pause 0.8s] or a blank line for a longer pause.\n" + note + format_script(turns)


def script_line(voice: str | None, edits: Sequence[str] | str | None, text: str | None) -> str:
    """One turn as a script line (no newline), written by the script writer so that it parses back."""
    voice = (voice or "").strip()
    if not voice:
        raise InvalidInputError("choose the line's voice", field="voice")
    words = " ".join((text or "").split())  # one line: line breaks in the box become spaces
    if not words:
        raise InvalidInputError("write what the line says", field="text")
    values = edits if isinstance(edits, str) else ", ".join(edits or ())
    turn = Turn(words, voice, parse_instructions(values, field_name="edits"))
    return format_script([turn]).rstrip("\n")


def add_line(script: str | None, voice: str | None, edits: Sequence[str] | str | None, text: str | None) -> str:
    """``script`` with a new line at its end; blank lines already there (a longer pause) are kept."""
    line = script_line(voice, edits, text)
    script = script or ""
    if script and not script.endswith(("\n", "\r")):
        script += "\n"
    return script + line + "\n"


@dataclass(frozen=True)
class DialogueResult:
    """What the tab shows after a run: the audio, its caption track (text and files), a summary."""

    audio_path: str
    srt: str
    caption_files: list[str]  # .srt and .vtt, beside the audio
    summary: str


def dialogue_action(engine: EditXEngine, script: str, seed: int | None, progress: Progress,
                    cancel: threading.Event | None = None) -> DialogueResult:
    """Parse the script, speak it as one audio through the engine, and write its caption files."""
    turns = parse_script(script)
    syn = engine.run(DialogueJob(turns, seed), progress=progress, cancel=cancel).collect()
    path = write_output(syn)
    srt_path, vtt_path = write_captions(path, syn.captions)
    voices = len({t.voice for t in turns})
    return DialogueResult(path, Path(srt_path).read_text(encoding="utf-8"), [srt_path, vtt_path],
                          f"{len(turns)} turns in {voices} voice(s): {summary(syn)}")
