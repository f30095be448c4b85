"""The dialogue script's text form: what people type in the UI becomes turns, and turns write back."""

from __future__ import annotations

import dataclasses
import os
import random
import time

import pytest

from runners.errors import InvalidInputError
from runners.jobs import MAX_PAUSE_MS, EditPass, Turn
from runners.text.script import BLANK_LINE_PAUSE_MS, format_script, parse_script
from runners.text.vocab import EMOTIONS, SPEEDS, STYLES


def _error(text: str, field_name: str = "script") -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        parse_script(text, field_name=field_name)
    return caught.value


def test_one_turn_per_line_with_voice_text_and_line_numbers() -> None:
    turns = parse_script("[alice] Hello there.\n[bob-2]   How are you?  \n")
    assert turns == (
        Turn("Hello there.", "alice", (), None, 1),
        Turn("How are you?", "bob-2", (), None, 2),
    )


def test_edits_in_parentheses_after_the_voice() -> None:
    (turn,) = parse_script("[bob] (happy, whisper) I won!")
    assert turn.text == "I won!"
    assert turn.edits == (EditPass("emotion", "happy"), EditPass("style", "whisper"))
    (typed,) = parse_script("[bob] (style:remove, more faster)Quick")
    assert typed.edits == (EditPass("style", "remove"), EditPass("speed", "more faster"))
    assert typed.text == "Quick"


def test_only_the_first_bracket_is_the_voice() -> None:
    turns = parse_script("[alice] [Japanese] こんにちは\n[bob] [laugh] no way\n[carol] (sad) [Sigh] fine")
    assert [(t.voice, t.text) for t in turns] == [
        ("alice", "[Japanese] こんにちは"),
        ("bob", "[laugh] no way"),
        ("carol", "[Sigh] fine"),
    ]
    assert turns[2].edits == (EditPass("emotion", "sad"),)


def test_empty_parentheses_keep_a_text_that_starts_with_a_parenthesis() -> None:
    (turn,) = parse_script("[alice] () (laughing) ok then")
    assert turn.edits == () and turn.text == "(laughing) ok then"


def test_comments_whitespace_and_windows_line_endings() -> None:
    text = "# cast: alice, bob\r\n   [alice] one   \r\n\t# [bob] not a turn\r\n[bob] two\r\n"
    turns = parse_script(text)
    assert [(t.voice, t.text, t.line, t.pause_after_ms) for t in turns] == [
        ("alice", "one", 2, None),
        ("bob", "two", 4, None),
    ]


def test_a_run_of_blank_lines_between_turns_is_a_longer_pause() -> None:
    turns = parse_script("[a] one\n\n\n\n[b] two\n[a] three\n\n")
    assert [t.pause_after_ms for t in turns] == [BLANK_LINE_PAUSE_MS, None, None]  # trailing blanks: no next turn
    assert BLANK_LINE_PAUSE_MS == 1000
    assert parse_script("\n\n[a] one\n[b] two")[0].pause_after_ms is None  # blanks before the first turn


@pytest.mark.parametrize(
    ("line", "ms"),
    [("[pause 1.5s]", 1500), ("[pause 800ms]", 800), ("[PAUSE 2]", 2000), ("[Pause 0.25 S]", 250),
     ("[ pause 10ms ]", 10), ("[pause 0s]", 0), ("[pause 10s]", MAX_PAUSE_MS)],
)
def test_pause_lines_set_the_previous_turns_pause(line: str, ms: int) -> None:
    turns = parse_script(f"[a] one\n{line}\n[b] two")
    assert turns[0].pause_after_ms == ms and turns[1].pause_after_ms is None


def test_several_pauses_add_up_and_an_explicit_pause_wins_over_blank_lines() -> None:
    turns = parse_script("[a] one\n[pause 1s]\n\n[pause 250ms]\n\n[b] two\n[pause 200ms]")
    assert turns[0].pause_after_ms == 1250
    assert turns[1].pause_after_ms == 200  # after the last turn: kept as written


def test_a_voice_may_be_called_pause() -> None:
    (turn,) = parse_script("[pause] I am a voice")
    assert turn.voice == "pause" and turn.text == "I am a voice"


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("[a] ok\nhello there", 2, "expected `[voice] text`"),
        ("[a] ok\n\n[alice hello", 3, "unclosed `[`"),
        ("[a] ok\n[alice]", 2, "nothing to say after [alice]"),
        ("[a] ok\n[alice] (happy)   ", 2, "nothing to say after [alice]"),
        ("[al ice] hi", 1, "is not a voice id"),
        ("[] hi", 1, "is not a voice id"),
        ("[" + "v" * 65 + "] hi", 1, "is not a voice id"),
        ("[a] (happy, whisper hello", 1, "unclosed parenthesis"),
        ("# intro\n[pause 1s]\n[a] hi", 2, "a pause must follow a turn"),
        ("[a] hi\n[pause soon]", 2, "expected a pause like"),
        ("[a] hi\n[pause]", 2, "expected a pause like"),
        ("[a] hi\n[pause -1s]", 2, "expected a pause like"),
        ("[a] hi\n[pause 1s] [b] hello", 2, "a pause line holds only the pause"),
        ("[a] hi\n[pause 10001ms]", 2, f"at most {MAX_PAUSE_MS} ms"),
        ("[a] hi\n[pause 6s]\n[pause 5s]", 3, f"at most {MAX_PAUSE_MS} ms"),
    ],
)
def test_errors_name_the_line_and_say_what_was_expected(text: str, line: int, says: str) -> None:
    error = _error(text, field_name="dialogue")
    assert str(error).startswith(f"line {line}: ")
    assert says in str(error)
    assert error.field == "dialogue"


def test_unknown_edit_values_name_the_line_and_the_value() -> None:
    error = _error("[a] hi\n\n[b] (happy, grumpy) hello")
    assert str(error).startswith("line 3: ")
    assert "'grumpy'" in str(error) and error.field == "script"
    ambiguous = _error("[a] (remove) hi")
    assert str(ambiguous).startswith("line 1: ") and "emotion:remove or style:remove" in str(ambiguous)


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n\n# another", "\r\n"])
def test_a_script_without_turns_is_refused(text: str) -> None:
    error = _error(text)
    assert str(error).startswith("script has no turns")


# ------------------------------------------------------------------ writing back
def test_format_writes_the_form_people_type() -> None:
    turns = (
        Turn("Hello", "alice"),
        Turn("[laugh] no way", "bob", (EditPass("emotion", "happy"), EditPass("denoise")), 1500),
        Turn("(aside) fine", "alice", (), 300),
        Turn("bye", "bob"),
    )
    assert format_script(turns) == (
        "[alice] Hello\n"
        "[bob] (emotion:happy, denoise) [laugh] no way\n"
        "[pause 1500ms]\n"
        "[alice] () (aside) fine\n"
        "[pause 300ms]\n"
        "[bob] bye\n"
    )


@pytest.mark.parametrize(
    "turn",
    [
        Turn("two\nlines", "alice"),
        Turn("", "alice"),
        Turn("  padded ", "alice"),
        Turn("hi", "not a voice"),
        Turn("hi", "alice", (EditPass("paralinguistic", None, "hi [laugh]"),)),
        Turn("hi", "alice", (EditPass("emotion", "grumpy"),)),
        Turn("hi", "alice", pause_after_ms=MAX_PAUSE_MS + 1),
    ],
)
def test_format_refuses_turns_no_line_can_hold(turn: Turn) -> None:
    with pytest.raises(InvalidInputError) as caught:
        format_script([Turn("first", "bob"), turn])
    assert str(caught.value).startswith("turn 2")


_EDITS = (
    [EditPass("emotion", v) for v in EMOTIONS]
    + [EditPass("style", v) for v in STYLES]
    + [EditPass("speed", v) for v in SPEEDS]
    + [EditPass("denoise"), EditPass("vad")]
)
_WORDS = ("hello", "world", "[laugh]", "[Japanese]", "こんにちは", "(aside)", "#1", "[pause 1s]", "a,b",
          "Ünïcødé", "[alice]", "(happy)", ")", "[", "]", "你好", "--", "x" * 30)
_VOICE_CHARS = "abcXYZ019_-"


def _random_turn(rng: random.Random) -> Turn:
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 6)))
    voice = "".join(rng.choice(_VOICE_CHARS) for _ in range(rng.randint(1, 64)))
    edits = tuple(rng.choice(_EDITS) for _ in range(rng.randint(0, 5)))
    pause = rng.choice([None, None, 0, 300, BLANK_LINE_PAUSE_MS, MAX_PAUSE_MS, rng.randint(0, MAX_PAUSE_MS)])
    return Turn(text, voice, edits, pause)


def test_random_scripts_round_trip() -> None:
    seed = int(os.environ.get("SCRIPT_SEED", time.time_ns() % 2**32))  # set it to replay a failure
    print(f"round-trip seed {seed}")
    rng = random.Random(seed)
    for _ in range(300):
        turns = tuple(_random_turn(rng) for _ in range(rng.randint(1, 8)))
        back = parse_script(format_script(turns))
        assert tuple(dataclasses.replace(t, line=None) for t in back) == turns, f"seed {seed}"
        # every turn points at its own line of the written script
        lines = format_script(turns).splitlines()
        assert all(lines[t.line - 1].startswith(f"[{t.voice}]") for t in back)
