"""Token-level prompts for cloning and editing, in the official chat format.

Two layouts, chosen by the checkpoint's tokenizer files:

- With a chat template (the 2026 release's code builds every prompt with the tokenizer's
  ``apply_chat_template``): the turns are messages — system (the clone template filled in,
  or the edit persona) and user (the target text, or ``instruction\\n<audio…>\\n``) — rendered
  by that template with the generation prompt and tokenized as one text. The clone
  prompt's speaker name is then the literal ``debug``, as in that code.
- Without one (the November 2025 code): BOS, then ``<|BOT|>`` role-text ``<|EOT|>`` turns
  for system and human, each part encoded on its own, then an open ``<|BOT|>assistant\\n``
  turn the model completes; the speaker name is a hash of transcript and audio.

The wording of the system prompts and instructions is what the model was trained on; it
must stay byte-identical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from runners.chat_template import ChatMessage
from runners.edit_vocab import InvalidEditError
from runners.tokens import to_token_string

BOS_ID = 1
EOT_ID = 3
BOT_ID = 4
TEMPLATE_SPEAKER = "debug"  # the 2026 code's fixed speaker name in the clone prompt

CLONE_SYSTEM_TEMPLATE = (
    "Generate audio with the following timbre, prosody and speaking style\n"
    "\n"
    "[speaker_start]\n"
    "speaker name: {speaker}\n"
    "speaker prompt text: \n"
    "{prompt_text}\n"
    "speaker audio tokens: \n"
    "{audio_tokens}\n"
    "[speaker_end]\n"
)

EDIT_SYSTEM_PROMPT = (
    "As a highly skilled audio editing and tuning specialist, you excel in interpreting user instructions "
    "and applying precise adjustments to meet their needs. Your expertise spans a wide range of enhancement "
    "capabilities, including but not limited to:\n"
    "# Emotional Enhancement\n"
    "# Speaking Style Transfer\n"
    "# Non-linguistic Adjustments\n"
    "# Audio Tuning & Editing\n"
    "Note: You will receive instructions in natural language and are expected to accurately interpret and "
    "execute the most suitable audio edits and enhancements.\n"
)

_KEEP_CLEAN = (
    "from the given audio while preserving the voice content clearly. Ensure that the speech quality "
    "remains intact with minimal distortion, and eliminate all {what} from the audio.\n"
)
DENOISE_INSTRUCTION = "Remove any noise " + _KEEP_CLEAN.format(what="noise")
VAD_INSTRUCTION = "Remove any silent portions " + _KEEP_CLEAN.format(what="silence")


class TextEncoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


class ChatTokenizer(TextEncoder, Protocol):
    chat_template: str | None

    def apply_chat_template(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> list[int]: ...


def edit_instruction(edit_type: str, edit_info: str | None, audio_text: str | None, target_text: str | None) -> str:
    """The natural-language instruction for one edit, ending in a newline."""
    said = (audio_text or "").strip()
    if edit_type in ("emotion", "speed"):
        if edit_info == "remove":
            return f"Remove any emotion in the following audio and the reference text is: {said}\n"
        return f"Make the following audio more {edit_info}. The text corresponding to the audio is: {said}\n"
    if edit_type == "style":
        if edit_info == "remove":
            return f"Remove any speaking styles in the following audio and the reference text is: {said}\n"
        return f"Make the following audio more {edit_info} style. The text corresponding to the audio is: {said}\n"
    if edit_type == "denoise":
        return DENOISE_INSTRUCTION
    if edit_type == "vad":
        return VAD_INSTRUCTION
    if edit_type == "paralinguistic":
        return (
            f"Add some non-verbal sounds to make the audio more natural, the new text is : {target_text}\n"
            f"  The text corresponding to the audio is: {said}\n"
        )
    raise InvalidEditError(f"unknown edit_type {edit_type!r}")


def clone_speaker_id(prompt_text: str, samples: np.ndarray) -> str:
    """Stable speaker name for the clone prompt: hash of the transcript and the waveform's ends."""
    flat = np.asarray(samples, dtype=np.float32).reshape(-1)
    if flat.size > 2000:
        flat = np.concatenate([flat[:1000], flat[-1000:]])
    digest = hashlib.sha256(prompt_text.encode("utf-8"))
    digest.update(flat.tobytes())
    return "clone_" + digest.hexdigest()[:16]


def system_turn_length(prompt_ids: Sequence[int]) -> int:
    """Ids up to and including the system turn's ``<|EOT|>``; 0 when there is none.

    Everything before the human turn is the same for every clone in one voice (with one
    transcript) and for every edit, so those requests may share its K/V.
    """
    try:
        return list(prompt_ids).index(EOT_ID) + 1
    except ValueError:
        return 0


class PromptBuilder:
    """Builds the LLM input ids for clone and edit requests."""

    def __init__(self, tokenizer: TextEncoder) -> None:
        self.tokenizer = tokenizer

    @property
    def uses_chat_template(self) -> bool:
        """Whether prompts go through the checkpoint's chat template (the 2026 layout)."""
        return getattr(self.tokenizer, "chat_template", None) is not None

    def speaker_id(self, prompt_text: str, samples: np.ndarray) -> str:
        """The speaker name the matching upstream release writes into the clone prompt."""
        return TEMPLATE_SPEAKER if self.uses_chat_template else clone_speaker_id(prompt_text, samples)

    def _chat(self, system: str, user: str) -> list[int]:
        chat: ChatTokenizer = self.tokenizer  # type: ignore[assignment]
        messages = [ChatMessage(role="system", content=system), ChatMessage(role="user", content=user)]
        return chat.apply_chat_template(messages, add_generation_prompt=True)

    def _turn(self, role: str, body_ids: Sequence[int]) -> list[int]:
        return [BOT_ID, *self.tokenizer.encode(f"{role}\n"), *body_ids, EOT_ID]

    def _open_assistant(self) -> list[int]:
        return [BOT_ID, *self.tokenizer.encode("assistant\n")]

    def clone(self, prompt_text: str, prompt_codec_ids: Sequence[int], target_text: str, speaker_id: str) -> list[int]:
        system = CLONE_SYSTEM_TEMPLATE.format(
            speaker=speaker_id, prompt_text=prompt_text, audio_tokens=to_token_string(prompt_codec_ids)
        )
        if self.uses_chat_template:
            return self._chat(system, target_text)
        # The target text is encoded after a newline that is then dropped, so that
        # sentencepiece does not prepend its word-boundary piece to the first word.
        newline = self.tokenizer.encode("\n")
        target = self.tokenizer.encode("\n" + target_text)[len(newline) :]
        return [BOS_ID, BOT_ID, *self.tokenizer.encode("system\n" + system), EOT_ID,
                *self._turn("human", target), *self._open_assistant()]

    def edit(self, instruction: str, audio_codec_ids: Sequence[int]) -> list[int]:
        if self.uses_chat_template:
            return self._chat(EDIT_SYSTEM_PROMPT, f"{instruction}\n{to_token_string(audio_codec_ids)}\n")
        human = self.tokenizer.encode(f"{instruction}\n{to_token_string(audio_codec_ids)}\n")
        return [BOS_ID, BOT_ID, *self.tokenizer.encode("system\n" + EDIT_SYSTEM_PROMPT), EOT_ID,
                *self._turn("human", human), *self._open_assistant()]
