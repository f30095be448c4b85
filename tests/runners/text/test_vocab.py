"""The edit vocabulary: the values the official model was trained with, and validation messages."""

from __future__ import annotations

import pytest

from api.errors import rule_for
from runners.text.vocab import VOCABULARY, InvalidEditError, validate_edit
from runners.errors import InvalidInputError


def test_counts_match_the_official_vocabulary() -> None:
    assert len(VOCABULARY.spec("emotion").values) == 15
    assert len(VOCABULARY.spec("style").values) == 33
    assert VOCABULARY.spec("speed").values == ["faster", "slower", "more faster", "more slower"]
    assert {s.name for s in VOCABULARY.edit_types} == {"emotion", "style", "speed", "paralinguistic", "denoise", "vad"}
    assert "[Laughter]" in VOCABULARY.paralinguistic_tags


NOVEMBER_TAGS = ["[Breathing]", "[Laughter]", "[Surprise-oh]", "[Confirmation-en]", "[Uhm]", "[Surprise-ah]",
                 "[Surprise-wa]", "[Sigh]", "[Question-ei]", "[Dissatisfaction-hnn]"]
# The 2026-01-29 release's tag table, in its order and spelling.
RELEASE_2026_TAGS = ["[sigh]", "[inhale]", "[laugh]", "[chuckle]", "[exhale]", "[clears throat]", "[snort]",
                     "[giggle]", "[cough]", "[breath]", "[uhm]", "[Confirmation-en]", "[Surprise-oh]",
                     "[Surprise-ah]", "[Surprise-wa]", "[Surprise-yo]", "[Dissatisfaction-hnn]", "[Question-ei]",
                     "[Question-ah]", "[Question-en]", "[Question-yi]", "[Question-oh]"]


def test_every_tag_of_both_releases_is_listed_with_its_releases() -> None:
    tags = VOCABULARY.paralinguistic_tags
    assert tags[:10] == NOVEMBER_TAGS  # older clients that show the first ten keep their list
    assert set(tags) == set(NOVEMBER_TAGS) | set(RELEASE_2026_TAGS) and len(tags) == len(set(tags))
    details = {d.tag: d for d in VOCABULARY.paralinguistic_tag_details}
    assert list(details) == tags
    assert details["[exhale]"].release == "2026-01-29" and details["[exhale]"].releases == ["2026-01-29"]
    assert details["[Laughter]"].releases == ["2025-11"]
    assert details["[Surprise-oh]"].release == "2025-11"
    assert details["[Surprise-oh]"].releases == ["2025-11", "2026-01-29"]
    current = [d.tag for d in VOCABULARY.paralinguistic_tag_details if VOCABULARY.current_release in d.releases]
    assert sorted(current) == sorted(RELEASE_2026_TAGS)


def test_language_tags_and_pronunciation_help() -> None:
    assert VOCABULARY.language_tags == ["[Sichuanese]", "[Cantonese]", "[Japanese]", "[Korean]"]
    assert "guo4" in VOCABULARY.pronunciation


def test_paralinguistic_help_names_new_and_old_spellings() -> None:
    with pytest.raises(InvalidEditError) as err:
        validate_edit("paralinguistic", None, "")
    assert "[clears throat]" in str(err.value) and "[Laughter]" in str(err.value)


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
    assert validate_edit("paralinguistic", None, "Hi [clears throat] there") is None


def test_paralinguistic_target_text_markup_is_checked() -> None:
    assert validate_edit("paralinguistic", None, "[exhale] Well, that was close.") is None
    with pytest.raises(InvalidInputError) as err:
        validate_edit("paralinguistic", None, "[exhail] Well, that was close.")
    assert err.value.field == "target_text" and "[exhale]" in str(err.value)
