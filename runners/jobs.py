"""Typed jobs: what a front end asks the engine to do, checked once, run by one pipeline.

Every front end (the native routes, ``/v1``, the UI, the tests, the benchmarks) turns its
request into one of these and hands it to :meth:`runners.engine.EditXEngine.run`:

- :class:`CloneJob`: speak ``text`` in a voice (an uploaded prompt or a registered voice),
  optionally followed by edit passes (what OpenAI's ``instructions`` mean);
- :class:`EditJob`: edit an audio one or more times.

Both are a chain of steps (a clone, then edit passes; or edit passes alone) and share one
seed rule (:func:`step_seed`). The options are plain frozen dataclasses, as faster-whisper
keeps its transcription options: they hold audio tensors, which pydantic would copy, and
they are validated by the preparation stage, which knows the limits in force.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from runners.audio import Audio
from runners.text.vocab import VOCABULARY
from runners.errors import InvalidInputError

MAX_EDIT_PASSES = 5  # passes of one edit (n_edit_iter), and edit instructions after one clone


def step_seed(seed: int | None, k: int) -> int | None:
    """The seed of generation step ``k`` of a seeded job: ``seed + k`` (mod 2**32); None stays random.

    Step k is sentence k of a clone's text, or edit pass k of a chain counted from its first
    step (a clone followed by edits: the clone is step 0, the first edit step 1; an edit job's
    first pass is step 0). One rule for every front end, so a seeded job gives the same audio
    whichever route asked for it.
    """
    return None if seed is None else (seed + k) % 2**32


PART_SEED_STRIDE = 1000  # seeds apart of consecutive parts of one job (a clone's sentences stay below it)


def part_seed(seed: int | None, part: int) -> int | None:
    """The seed of part ``part`` of a job made of parts (a dialogue's turns, a long recording's pieces).

    ``seed + 1000·part``, and within the part :func:`step_seed` as for any job: part 0 of a
    seeded dialogue sounds exactly like the clone of that turn with the same seed.
    """
    return step_seed(seed, PART_SEED_STRIDE * part)


@dataclass(frozen=True)
class EditPass:
    """One edit applied to the audio made so far."""

    edit_type: str
    edit_info: str | None = None
    target_text: str | None = None  # paralinguistic only: the transcript with tags

    def label(self) -> str:
        return f"{self.edit_type}:{self.edit_info}" if self.edit_info else self.edit_type


@dataclass(frozen=True)
class CloneJob:
    """Speak ``text`` in a voice, then apply ``edits`` in order (each to the previous output).

    The voice is ``prompt`` (audio, with ``prompt_text`` its transcript; empty = transcribed)
    or ``voice``, the id of a registered voice (its own transcript unless ``prompt_text`` is
    given). ``speed`` (0.25-4) stretches the clone in time at the same pitch.
    """

    text: str
    prompt: Audio | None = None
    prompt_text: str | None = None
    voice: str | None = None
    seed: int | None = None
    speed: float = 1.0
    edits: tuple[EditPass, ...] = ()

    @property
    def kind(self) -> str:
        return "clone" + (" + " + ", ".join(e.label() for e in self.edits) if self.edits else "")


@dataclass(frozen=True)
class EditJob:
    """Edit ``audio`` (its transcript ``audio_text``; empty = transcribed where needed) ``passes`` times.

    Each pass edits the previous pass's output; the transcript carried forward is the tagged
    text after a paralinguistic pass, the original transcript otherwise.
    """

    audio: Audio
    edit_type: str
    edit_info: str | None = None
    audio_text: str | None = None
    target_text: str | None = None
    passes: int = 1
    seed: int | None = None

    @property
    def edit(self) -> EditPass:
        return EditPass(self.edit_type, self.edit_info, self.target_text)

    @property
    def kind(self) -> str:
        return f"edit {self.edit.label()}" + (f" x{self.passes}" if self.passes > 1 else "")


MAX_PAUSE_MS = 10_000  # longest pause after one dialogue turn
DEFAULT_PAUSE_MS = 300  # the pause after a turn that names none


@dataclass(frozen=True)
class Turn:
    """One line of a dialogue: ``text`` spoken in the registered ``voice``, then its ``edits``.

    ``pause_after_ms`` is the silence before the next turn (None: :data:`DEFAULT_PAUSE_MS`);
    ``line`` is where the turn was written in a text script, so errors can point at it.
    """

    text: str
    voice: str
    edits: tuple[EditPass, ...] = ()
    pause_after_ms: int | None = None
    line: int | None = None

    def where(self, index: int) -> str:
        """How errors name this turn: ``turn 3`` or ``turn 3 (line 5)``."""
        return f"turn {index + 1}" + (f" (line {self.line})" if self.line is not None else "")


@dataclass(frozen=True)
class DialogueJob:
    """Speak ``turns`` in script order as one audio: all turns are generated together, then joined."""

    turns: tuple[Turn, ...]
    seed: int | None = None

    @property
    def kind(self) -> str:
        return f"dialogue of {len(self.turns)} turns"


Job = CloneJob | EditJob | DialogueJob


Progress = Callable[[str, float], None]  # (stage description, fraction done 0..1), for progress bars


def no_progress(stage: str, fraction: float) -> None:
    """The progress callback of a caller that shows none."""


def forward_only(progress: Progress) -> Progress:
    """``progress`` with fractions kept within 0..1 and never lower than one already reported.

    A job made of parts prepares them all before it decodes them in order, so its raw fractions
    step back (turn 3 generating, then turn 1 decoding); every caller's bar should only move on,
    also when parts report from threads of their own.
    """
    done = 0.0
    lock = threading.Lock()

    def report(stage: str, fraction: float) -> None:
        nonlocal done
        with lock:
            done = max(done, min(max(fraction, 0.0), 1.0))
            progress(stage, done)

    return report


# ------------------------------------------------------------------ instructions
def _instruction_table() -> tuple[dict[str, list[EditPass]], list[str]]:
    """Every bare value → the edit passes it could mean, and the listing shown in errors.

    Values of emotion, style and speed, plus the types that take no value (denoise, vad).
    Paralinguistic edits need a tagged transcript, which an instruction cannot carry.
    """
    table: dict[str, list[EditPass]] = {}
    shown: list[str] = []
    for spec in VOCABULARY.edit_types:
        if spec.values:
            for value in spec.values:
                table.setdefault(value.lower(), []).append(EditPass(spec.name, value))
            shown.append(f"{spec.name}: {', '.join(spec.values)}")
        elif not spec.needs_target_text:
            table.setdefault(spec.name, []).append(EditPass(spec.name))
            shown.append(spec.name)
    return table, shown


_INSTRUCTIONS, _INSTRUCTIONS_SHOWN = _instruction_table()


def parse_instructions(text: str | None, field_name: str = "instructions") -> tuple[EditPass, ...]:
    """``"happy"``, ``"whisper, slower"`` or ``"style:remove"`` → edit passes, in the order given.

    A value two edit types share (``remove`` is both an emotion and a style) must carry its
    type, ``emotion:remove`` or ``style:remove``; any value may. Anything outside the
    vocabulary is an error that lists what is allowed.
    """
    passes: list[EditPass] = []
    for raw in (text or "").split(","):
        item = " ".join(raw.strip().lower().split())
        if not item:
            continue
        kind, sep, value = item.partition(":")
        if sep:
            kind, value = kind.strip(), value.strip()
            found = [p for p in _INSTRUCTIONS.get(value or kind, []) if p.edit_type == kind]
        else:
            found = _INSTRUCTIONS.get(item, [])
        if len(found) > 1:
            options = " or ".join(p.label() for p in found)
            raise InvalidInputError(f"instruction {item!r} is ambiguous: write {options}", field=field_name)
        if not found:
            raise InvalidInputError(
                f"unknown instruction {item!r}; use comma-separated edit values (see GET /vocabulary), "
                f"optionally as type:value — {'; '.join(_INSTRUCTIONS_SHOWN)}",
                field=field_name,
            )
        passes.append(found[0])
    if len(passes) > MAX_EDIT_PASSES:
        raise InvalidInputError(f"at most {MAX_EDIT_PASSES} instructions (got {len(passes)})", field=field_name)
    return tuple(passes)
