"""The edit vocabulary: the values the official model was trained with, and validation messages."""

from __future__ import annotations

import pytest

from api.errors import rule_for
from runners.edit_vocab import VOCABULARY, InvalidEditError, validate_edit


def test_counts_match_the_official_vocabulary() -> None:
    assert len(VOCABULARY.spec("emotion").values) == 15
    assert len(VOCABULARY.spec("style").values) == 33
    assert VOCABULARY.spec("speed").values == ["faster", "slower", "more faster", "more slower"]
    assert {s.name for s in VOCABULARY.edit_types} == {"emotion", "style", "speed", "paralinguistic", "denoise", "vad"}
    assert "[Laughter]" in VOCABULARY.paralinguistic_tags and len(VOCABULARY.paralinguistic_tags) == 10


def test_vocabulary_is_plain_json_for_clients() -> None:
    data = VOCABULARY.model_dump(mode="json")
    assert data["edit_types"][0]["name"] == "emotion"
    assert "remove" in data["edit_types"][0]["values"]


@pytest.mark.parametrize(
    ("edit_type", "edit_info", "target", "field", "needle"),
    [
        ("colour", "red", None, "edit_type", "unknown edit_type 'colour'"),
        ("emotion", "grumpy", None, "edit_info", "unknown edit_info 'grumpy'"),
        ("emotion", None, None, "edit_info", "needs edit_info"),
        ("denoise", "hard", None, "edit_info", "takes no edit_info"),
        ("paralinguistic", None, "  ", "target_text", "needs target_text"),
    ],
)
def test_invalid_edits_name_the_field_and_the_choices(edit_type, edit_info, target, field, needle) -> None:
    with pytest.raises(InvalidEditError) as err:
        validate_edit(edit_type, edit_info, target)
    assert err.value.field == field
    assert needle in str(err.value)
    assert rule_for(err.value).status == 400


def test_valid_edits_pass_through() -> None:
    assert validate_edit("style", " whisper ") == "whisper"
    assert validate_edit("vad", "") is None
    assert validate_edit("paralinguistic", None, "Hi [Laughter]") is None
