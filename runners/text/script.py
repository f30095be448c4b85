"""A dialogue script as people type it: one turn per line, ``[voice] (edits) text``.

The UI's script box, the API's plain-text script and the tests all use this form::

    # a comment
    [alice] Hello there.
    [bob] (happy, whisper) [laugh] No way!
    [pause 1.5s]
    [alice] [Japanese] こんにちは

    [bob] A blank line before a turn is a longer pause.

Only the first bracket on a line names the voice, so a text may begin with its own language
or sound tag. Edits in parentheses right after the voice are the values
:func:`runners.jobs.parse_instructions` takes; empty parentheses ``()`` mean none and let a
text begin with a parenthesis of its own. A pause line sets the silence after the turn
above it. Errors name the 1-based line, so the UI can point at it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from runners.errors import InvalidInputError
from runners.jobs import MAX_PAUSE_MS, Turn, parse_instructions
from runners.voices import NAME_PATTERN

BLANK_LINE_PAUSE_MS = 1000  # a run of blank lines between two turns: at least this pause after the first
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_PAUSE_WORD = re.compile(r"\s*pause\s", re.IGNORECASE)  # voice ids hold no spaces
_PAUSE = re.compile(r"\s*pause\s+(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*", re.IGNORECASE)
_EXPECTED_TURN = "expected `[voice] text` or `[voice] (edits) text`, e.g. `[alice] (happy) Hello`"
_EXPECTED_PAUSE = "expected a pause like `[pause 1.5s]`, `[pause 800ms]` or `[pause 2]` (seconds)"


def _pause_ms(inner: str) -> int | None:
    """The milliseconds a ``[pause …]`` bracket's inside asks for; None when it is not a valid pause."""
    match = _PAUSE.fullmatch(inner)
    if match is None:
        return None
    value = float(match.group(1))
    unit = (match.group(2) or "s").lower()
    return round(value if unit == "ms" else value * 1000)


def parse_script(text: str, field_name: str = "script") -> tuple[Turn, ...]:
    """The turns a script holds, in order, each with the line it was written on.

    Pauses: a turn's ``pause_after_ms`` is None (the default pause) unless the lines after
    it say otherwise. ``[pause …]`` lines set it (several in a row add up, at most
    :data:`~runners.jobs.MAX_PAUSE_MS`); without one, blank lines before the next turn make
    it :data:`BLANK_LINE_PAUSE_MS`. An explicit pause wins over blank lines, because it is
    the length the writer asked for.
    """
    turns: list[Turn] = []
    explicit: int | None = None  # pause lines summed since the last turn
    blank_run = False  # blank lines seen since the last turn

    def close_previous(next_follows: bool) -> None:
        if not turns:
            return
        pause = explicit if explicit is not None else (BLANK_LINE_PAUSE_MS if blank_run and next_follows else None)
        if pause is not None:
            last = turns[-1]
            turns[-1] = Turn(last.text, last.voice, last.edits, pause, last.line)

    def fail(n: int, message: str) -> InvalidInputError:
        return InvalidInputError(f"line {n}: {message}", field=field_name)

    for n, raw in enumerate(_LINE_BREAK.split(text or ""), start=1):
        line = raw.strip()
        if not line:
            blank_run = blank_run or bool(turns)
            continue
        if line.startswith("#"):
            continue
        if not line.startswith("["):
            raise fail(n, f"{_EXPECTED_TURN}; a line must start with the voice in brackets")
        close = line.find("]")
        if close < 0:
            raise fail(n, f"unclosed `[`: {_EXPECTED_TURN}")
        inner, rest = line[1:close], line[close + 1:].strip()
        if _PAUSE_WORD.match(inner) or (inner.strip().lower() == "pause" and not rest):
            ms = _pause_ms(inner)
            if ms is None:
                raise fail(n, _EXPECTED_PAUSE)
            if rest:
                raise fail(n, f"a pause line holds only the pause; put {rest!r} on a line of its own")
            if not turns:
                raise fail(n, "a pause must follow a turn: the script starts with `[voice] text`")
            total = (explicit or 0) + ms
            if total > MAX_PAUSE_MS:
                raise fail(n, f"pause of {total} ms after one turn; at most {MAX_PAUSE_MS} ms")
            explicit = total
            continue
        voice = inner.strip()
        if not NAME_PATTERN.fullmatch(voice):
            raise fail(
                n,
                f"{inner!r} is not a voice id (1–64 characters of A–Z, a–z, 0–9, '_' and '-'): "
                f"{_EXPECTED_TURN}",
            )
        edits = ()
        if rest.startswith("("):
            end = rest.find(")")
            if end < 0:
                raise fail(n, "unclosed parenthesis: write the edits as `(happy, whisper)` before the text")
            try:
                edits = parse_instructions(rest[1:end], field_name=f"{field_name} line {n}")
            except InvalidInputError as exc:
                raise fail(n, str(exc)) from exc
            rest = rest[end + 1:].strip()
        if not rest:
            raise fail(n, f"nothing to say after [{voice}]: {_EXPECTED_TURN}")
        close_previous(next_follows=True)
        turns.append(Turn(rest, voice, edits, None, n))
        explicit, blank_run = None, False
    close_previous(next_follows=False)
    if not turns:
        raise InvalidInputError("script has no turns: write one turn per line as `[voice] text`", field=field_name)
    return tuple(turns)


def _edit_values(turn: Turn, index: int) -> str:
    """The turn's edits as ``type:value`` items that parse back to the same passes."""
    items = []
    for edit in turn.edits:
        if edit.target_text is not None:
            raise InvalidInputError(
                f"{turn.where(index)}: a {edit.edit_type} edit with a target text cannot be written in a script",
                field="turns",
            )
        items.append(f"{edit.edit_type}:{edit.edit_info}" if edit.edit_info else edit.edit_type)
    written = ", ".join(items)
    try:
        same = parse_instructions(written, field_name="turns") == turn.edits
    except InvalidInputError:
        same = False
    if not same:
        raise InvalidInputError(f"{turn.where(index)}: edits {written!r} cannot be written in a script", field="turns")
    return written


def format_script(turns: Sequence[Turn]) -> str:
    """The script text of ``turns``: what :func:`parse_script` reads back as the same turns.

    Edits are written with their type (``emotion:happy``), so values two types share stay
    unambiguous; a pause that is set (not None) is written as a ``[pause Xms]`` line, even
    when it equals the default, so the round trip is exact. A turn that no line can hold (a
    text with a line break, an empty text, a malformed voice id, a paralinguistic edit's
    target text) is an InvalidInputError naming it.
    """
    lines: list[str] = []
    for index, turn in enumerate(turns):
        if not isinstance(turn.voice, str) or not NAME_PATTERN.fullmatch(turn.voice):
            raise InvalidInputError(f"{turn.where(index)}: {turn.voice!r} is not a voice id", field="turns")
        text = turn.text.strip()
        if not text or text != turn.text or _LINE_BREAK.search(text):
            raise InvalidInputError(
                f"{turn.where(index)}: a script line holds a non-empty text without line breaks "
                "or surrounding whitespace",
                field="turns",
            )
        edits = _edit_values(turn, index)
        # Parentheses right after the voice are read as edits: "()" keeps a text's own "(…)" as text.
        head = f"[{turn.voice}] ({edits}) " if edits or text.startswith("(") else f"[{turn.voice}] "
        lines.append(head + text)
        if turn.pause_after_ms is not None:
            if not 0 <= turn.pause_after_ms <= MAX_PAUSE_MS:
                raise InvalidInputError(
                    f"{turn.where(index)}: pause_after_ms must be 0–{MAX_PAUSE_MS}", field="turns"
                )
            lines.append(f"[pause {int(turn.pause_after_ms)}ms]")
    return "\n".join(lines) + ("\n" if lines else "")
