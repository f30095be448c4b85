"""How ``instructions`` become edit passes, and how a speech request becomes clone arguments."""

from __future__ import annotations

import pytest
import torch

from api.openai.protocol import SpeechRequest, parse_instructions
from runners.audio import Audio
from runners.errors import InvalidInputError
from runners.voices import StoredVoice, Voice


def labels(text: str) -> list[str]:
    return [p.label() for p in parse_instructions(text)]


def test_values_map_to_their_edit_type_in_order() -> None:
    assert labels("happy") == ["emotion:happy"]
    assert labels("whisper, Slower") == ["style:whisper", "speed:slower"]
    assert labels("more  faster,denoise , vad") == ["speed:more faster", "denoise", "vad"]
    assert labels("") == [] and labels(" , ") == []


def test_a_shared_value_needs_its_type() -> None:
    with pytest.raises(InvalidInputError, match="emotion:remove or style:remove"):
        parse_instructions("remove")
    assert labels("emotion:remove, style:remove") == ["emotion:remove", "style:remove"]
    assert labels("style: whisper") == ["style:whisper"]


@pytest.mark.parametrize("text", ["sing", "emotion:whisper", "paralinguistic", "speed:happy", "happy:emotion"])
def test_anything_else_lists_what_is_allowed(text: str) -> None:
    with pytest.raises(InvalidInputError) as bad:
        parse_instructions(text)
    assert bad.value.field == "instructions"
    assert "emotion: happy" in str(bad.value) and "style:" in str(bad.value) and "denoise" in str(bad.value)


def test_too_many_passes() -> None:
    with pytest.raises(InvalidInputError, match="at most 5"):
        parse_instructions("happy, sad, angry, whisper, faster, slower")


def test_request_defaults_aliases_and_clone_args() -> None:
    req = SpeechRequest.model_validate({"model": "tts-1-hd", "input": "Hi.", "voice": {"id": "alice"}})
    assert (req.voice, req.response_format, req.speed, req.stream_format) == ("alice", "mp3", 1.0, "audio")
    stored = StoredVoice(Voice(id="alice", name="alice", text="prompt words", duration_s=1.0, created_at=1),
                         Audio(torch.zeros(16000), 16000), None, "")
    args = req.to_clone_args(stored, with_speed=False)
    assert args["prompt_text"] == "prompt words" and args["target_text"] == "Hi." and "speed" not in args
    assert req.model_copy(update={"speed": 2.0}).to_clone_args(stored, with_speed=True)["speed"] == 2.0
    for bad in ({"model": "tts-9"}, {"input": "  "}, {"speed": 0.1}, {"response_format": "ogg"}):
        with pytest.raises(ValueError):
            SpeechRequest.model_validate({"input": "Hi.", "voice": "alice", **bad})
