"""Prompt token sequences for clone and every edit type, against hand-written expectations (UPSTREAM.md §2.3)."""

from __future__ import annotations

import numpy as np
import pytest

from runners.edit_vocab import VOCABULARY, InvalidEditError
from runners.prompts import PromptBuilder, clone_speaker_id, edit_instruction


class CharTokenizer:
    """One id per character (ord + 1000): makes every encoded text readable in expectations."""

    def encode(self, text: str) -> list[int]:
        return [1000 + ord(c) for c in text]


def chars(text: str) -> list[int]:
    return CharTokenizer().encode(text)


BOS, BOT, EOT = 1, 4, 3
EDIT_SYSTEM = (
    "As a highly skilled audio editing and tuning specialist, you excel in interpreting user instructions and "
    "applying precise adjustments to meet their needs. Your expertise spans a wide range of enhancement "
    "capabilities, including but not limited to:\n# Emotional Enhancement\n# Speaking Style Transfer\n"
    "# Non-linguistic Adjustments\n# Audio Tuning & Editing\nNote: You will receive instructions in natural "
    "language and are expected to accurately interpret and execute the most suitable audio edits and "
    "enhancements.\n"
)


def test_clone_prompt_layout() -> None:
    codec = [5, 17, 1024, 2000, 5119]
    ids = PromptBuilder(CharTokenizer()).clone("hello there", codec, "Good morning.", "clone_0123456789abcdef")
    system = (
        "system\nGenerate audio with the following timbre, prosody and speaking style\n\n[speaker_start]\n"
        "speaker name: clone_0123456789abcdef\nspeaker prompt text: \nhello there\nspeaker audio tokens: \n"
        "<audio_5><audio_17><audio_1024><audio_2000><audio_5119>\n[speaker_end]\n"
    )
    expected = [BOS, BOT, *chars(system), EOT, BOT, *chars("human\n"), *chars("Good morning."), EOT,
                BOT, *chars("assistant\n")]
    assert ids == expected


class NewlineAwareTokenizer(CharTokenizer):
    """Like sentencepiece: encoding adds a word-boundary piece (id 7) in front of the text."""

    def encode(self, text: str) -> list[int]:
        return [7, *super().encode(text)]


def test_clone_target_text_drops_the_leading_boundary_piece() -> None:
    ids = PromptBuilder(NewlineAwareTokenizer()).clone("p", [0, 0, 1024, 1024, 1024], "Hi", "clone_x")
    # the target is encode("\n" + "Hi") minus encode("\n"): only the characters remain
    tail = [BOT, 7, *chars("human\n"), *chars("Hi"), EOT, BOT, 7, *chars("assistant\n")]
    assert ids[-len(tail):] == tail


EDIT_CASES = [
    ("emotion", "happy", "  I love it.  ", None,
     "Make the following audio more happy. The text corresponding to the audio is: I love it.\n"),
    ("emotion", "remove", "I love it.", None,
     "Remove any emotion in the following audio and the reference text is: I love it.\n"),
    ("style", "whisper", "I love it.", None,
     "Make the following audio more whisper style. The text corresponding to the audio is: I love it.\n"),
    ("style", "remove", "I love it.", None,
     "Remove any speaking styles in the following audio and the reference text is: I love it.\n"),
    ("speed", "more faster", "I love it.", None,
     "Make the following audio more more faster. The text corresponding to the audio is: I love it.\n"),
    ("denoise", None, "ignored", None,
     "Remove any noise from the given audio while preserving the voice content clearly. Ensure that the speech "
     "quality remains intact with minimal distortion, and eliminate all noise from the audio.\n"),
    ("vad", None, None, None,
     "Remove any silent portions from the given audio while preserving the voice content clearly. Ensure that "
     "the speech quality remains intact with minimal distortion, and eliminate all silence from the audio.\n"),
    ("paralinguistic", None, "I love it.", "I love it [Laughter].",
     "Add some non-verbal sounds to make the audio more natural, the new text is : I love it [Laughter].\n"
     "  The text corresponding to the audio is: I love it.\n"),
]


@pytest.mark.parametrize(("edit_type", "edit_info", "audio_text", "target_text", "instruction"), EDIT_CASES)
def test_edit_prompt_per_type(edit_type, edit_info, audio_text, target_text, instruction) -> None:
    assert edit_instruction(edit_type, edit_info, audio_text, target_text) == instruction
    codec = [1, 2, 1030, 1031, 1032]
    ids = PromptBuilder(CharTokenizer()).edit(instruction, codec)
    human = instruction + "\n<audio_1><audio_2><audio_1030><audio_1031><audio_1032>\n"
    expected = [BOS, BOT, *chars("system\n" + EDIT_SYSTEM), EOT, BOT, *chars("human\n"), *chars(human), EOT,
                BOT, *chars("assistant\n")]
    assert ids == expected


def test_every_edit_type_in_the_vocabulary_has_an_instruction() -> None:
    for spec in VOCABULARY.edit_types:
        info = spec.values[0] if spec.values else None
        text = edit_instruction(spec.name, info, "words", "words [Sigh]")
        assert text.endswith("\n")
        assert ("words" in text) == spec.needs_transcript


def test_unknown_edit_type_is_rejected() -> None:
    with pytest.raises(InvalidEditError, match="colour"):
        edit_instruction("colour", None, "x", None)


def test_speaker_id_is_stable_and_depends_on_text_and_audio() -> None:
    wave = np.linspace(-0.5, 0.5, 48000, dtype=np.float32)
    a = clone_speaker_id("hello", wave)
    assert a == clone_speaker_id("hello", wave.copy())
    assert a.startswith("clone_") and len(a) == len("clone_") + 16
    assert a != clone_speaker_id("hello!", wave)
    changed = wave.copy()
    changed[-1] = 0.9
    assert a != clone_speaker_id("hello", changed)
    middle = wave.copy()
    middle[24000] = 0.9  # only the first and last 1000 samples are hashed
    assert a == clone_speaker_id("hello", middle)
