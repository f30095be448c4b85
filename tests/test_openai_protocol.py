"""How ``instructions`` become edit passes, and how a speech request becomes an engine job."""

from __future__ import annotations

import pytest

from api.openai.protocol import SpeechRequest
from runners.errors import InvalidInputError
from runners.jobs import parse_instructions


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


def test_request_defaults_aliases_and_job() -> None:
    req = SpeechRequest.model_validate({"model": "tts-1-hd", "input": "Hi.", "voice": {"id": "alice"}})
    assert (req.voice, req.response_format, req.speed, req.stream_format) == ("alice", "mp3", 1.0, "audio")
    job = req.to_job()
    assert (job.text, job.voice, job.prompt, job.speed, job.edits) == ("Hi.", "alice", None, 1.0, ())
    fast = req.model_copy(update={"speed": 2.0, "seed": 5, "instructions": "sad, whisper"}).to_job()
    assert (fast.speed, fast.seed, [e.label() for e in fast.edits]) == (2.0, 5, ["emotion:sad", "style:whisper"])
    for bad in ({"model": "tts-9"}, {"input": "  "}, {"response_format": "ogg"}):
        with pytest.raises(ValueError):
            SpeechRequest.model_validate({"input": "Hi.", "voice": "alice", **bad})
