"""Prompt token sequences for clone and every edit type, in the November layout and through the 2026 chat template."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runners.chat_template import find_chat_template
from runners.edit_vocab import VOCABULARY, InvalidEditError
from runners.prompts import PromptBuilder, clone_speaker_id, edit_instruction, system_turn_length
from runners.text_tokenizer import TextTokenizer
from runners.tiny import build_tiny_model_root


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


# --- The 2026 layout: prompts through the checkpoint's chat template -------------------------------------

PARITY_2026 = Path(__file__).parent / "data" / "parity" / "prompt_chat_template_ids.json"


@pytest.fixture(scope="module")
def template_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    """The tiny text tokenizer in the 2026 form: tokenizer_config.json carries a chat template."""
    root = build_tiny_model_root(tmp_path_factory.mktemp("tpl"), seed=0, parts={"step1"}, chat_template=True)
    return TextTokenizer(root / "Step-Audio-EditX")


@pytest.fixture(scope="module")
def november_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    root = build_tiny_model_root(tmp_path_factory.mktemp("nov"), seed=0, parts={"step1"})
    return TextTokenizer(root / "Step-Audio-EditX")


def by_hand_2026(tok: TextTokenizer, system: str, user: str) -> list[int]:
    """Upstream's 2026 steps written out: messages [system, user] rendered with the generation prompt
    (``<s>``, then ``<|BOT|> role\\n…<|EOT|>`` per turn, ``user`` named ``human``, then
    ``<|BOT|> assistant\\n``), and the whole text tokenized with no special tokens added."""
    text = f"<s><|BOT|> system\n{system}<|EOT|><|BOT|> human\n{user}<|EOT|><|BOT|> assistant\n"
    return tok.encode(text, add_special_tokens=False)


def test_template_prompts_equal_the_2026_code(template_tokenizer: TextTokenizer) -> None:
    """Ids recorded from upstream's own 2026 prompt methods (transformers 4.57.3) on the same files."""
    recorded = json.loads(PARITY_2026.read_text())
    builder = PromptBuilder(template_tokenizer)
    assert builder.uses_chat_template
    assert {c["kind"] for c in recorded["cases"].values()} == {"clone", "edit"}
    for name, case in recorded["cases"].items():
        if case["kind"] == "clone":
            ours = builder.clone(case["prompt_text"], case["codec"], case["text"], builder.speaker_id("x", np.zeros(4)))
        else:
            ours = builder.edit(case["instruction"], case["codec"])
        assert ours == case["ids"], name


def test_template_clone_and_edit_follow_the_2026_steps(template_tokenizer: TextTokenizer) -> None:
    builder = PromptBuilder(template_tokenizer)
    codec = [5, 17, 1024, 2000, 5119]
    target = "[Japanese]今日はいい天気ですね。"
    system = (
        "Generate audio with the following timbre, prosody and speaking style\n\n[speaker_start]\n"
        "speaker name: debug\nspeaker prompt text: \nhello there\nspeaker audio tokens: \n"
        "<audio_5><audio_17><audio_1024><audio_2000><audio_5119>\n[speaker_end]\n"
    )
    ids = builder.clone("hello there", codec, target, builder.speaker_id("hello there", np.ones(3000)))
    assert ids == by_hand_2026(template_tokenizer, system, target)
    assert ids[:2] == [BOS, BOT] and ids[-1] != EOT and system_turn_length(ids) == ids.index(EOT) + 1
    instruction = edit_instruction("paralinguistic", None, "hello there", "hello [exhale] there")
    human = instruction + "\n<audio_5><audio_17><audio_1024><audio_2000><audio_5119>\n"
    assert builder.edit(instruction, codec) == by_hand_2026(template_tokenizer, EDIT_SYSTEM, human)


def test_files_without_a_template_keep_the_november_layout(november_tokenizer: TextTokenizer,
                                                           template_tokenizer: TextTokenizer) -> None:
    november, current = PromptBuilder(november_tokenizer), PromptBuilder(template_tokenizer)
    assert not november.uses_chat_template
    wave = np.linspace(-0.5, 0.5, 48000, dtype=np.float32)
    assert november.speaker_id("hello", wave) == clone_speaker_id("hello", wave)
    assert current.speaker_id("hello", wave) == "debug"
    codec = [1, 2, 1030, 1031, 1032]
    instruction = edit_instruction("emotion", "happy", "hello there", None)
    old, new = november.edit(instruction, codec), current.edit(instruction, codec)
    # The November code encodes the instruction on its own, so it starts with a word-boundary piece;
    # the template puts it right after "human\n" in one text, where it gets none. Nothing else differs.
    boundary = november_tokenizer.token_to_id("\u2581")
    split = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
    assert old[split] == boundary and old[:split] + old[split + 1:] == new


def test_template_found_in_a_jinja_file_or_a_named_list(tmp_path: Path) -> None:
    assert find_chat_template(tmp_path, {}) is None
    assert find_chat_template(tmp_path, {"chat_template": [{"name": "tool_use", "template": "T"},
                                                           {"name": "default", "template": "D"}]}) == "D"
    (tmp_path / "chat_template.jinja").write_text("{{ bos_token }}")
    assert find_chat_template(tmp_path, {}) == "{{ bos_token }}"
    assert find_chat_template(tmp_path, {"chat_template": "inline"}) == "inline"
