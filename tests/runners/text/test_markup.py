"""Language tags and pronunciation marks in texts: what passes, what is refused with a 400 that says why."""

from __future__ import annotations

import pytest

from api.errors import rule_for
from runners.text.vocab import LANGUAGE_TAGS
from runners.errors import InvalidInputError
from runners.text.markup import check_markup, pronunciation_mark


@pytest.mark.parametrize("tag", LANGUAGE_TAGS)
def test_language_tags_at_the_start_pass(tag: str) -> None:
    assert check_markup(f"{tag}今日はいい天気ですね。", False, "target_text") == f"{tag}今日はいい天気ですね。"


def test_a_language_tag_in_another_case_gets_the_official_spelling() -> None:
    assert check_markup("[japanese] こんにちは", False, "target_text") == "[Japanese] こんにちは"


def test_unknown_leading_tag_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInputError) as err:
        check_markup("[Japanse]こんにちは", False, "target_text")
    assert rule_for(err.value).status == 400 and err.value.field == "target_text"
    message = str(err.value)
    assert "[Japanse]" in message and all(t in message for t in LANGUAGE_TAGS)
    assert "[Laughter]" not in message  # a clone text takes no paralinguistic tags


def test_paralinguistic_tag_at_the_start_depends_on_where_it_is_allowed() -> None:
    assert check_markup("[exhale] Well, that was close.", True, "target_text") == "[exhale] Well, that was close."
    assert check_markup("[clears throat] Hello.", True, "target_text") == "[clears throat] Hello."
    with pytest.raises(InvalidInputError, match=r"unknown language tag \[exhale\]"):
        check_markup("[exhale] Well.", False, "target_text")
    with pytest.raises(InvalidInputError) as err:
        check_markup("[exhail] Well.", True, "target_text")
    assert "[exhale]" in str(err.value) and "[Cantonese]" in str(err.value)


def test_tags_after_the_start_and_plain_brackets_elsewhere() -> None:
    assert check_markup("Great [Laughter], nice [sigh].", True, "target_text") == "Great [Laughter], nice [sigh]."
    with pytest.raises(InvalidInputError, match="must come first"):
        check_markup("Hello there. [Korean]안녕하세요", False, "target_text")


def test_pronunciation_marks() -> None:
    text = "我也想guo4guo4guo1儿guo4guo4的生活"
    assert check_markup(text, False, "target_text") == text
    with pytest.raises(InvalidInputError, match="'guo6'.*1-5") as err:
        check_markup("我也想guo4guo6guo1儿", False, "prompt_text")
    assert err.value.field == "prompt_text"
    # digits beside letters that are not pinyin marks are left alone
    for ordinary in ("我用win10系统", "索尼a7相机", "我买了iphone6", "Version 2.0 is out", "第3版"):
        assert check_markup(ordinary, False, "target_text") == ordinary


def test_pronunciation_mark_builder() -> None:
    assert pronunciation_mark(" Guo ", 4) == "guo4"
    assert pronunciation_mark("lv", 4) == "lv4"
    with pytest.raises(InvalidInputError, match="tone"):
        pronunciation_mark("guo", 6)
    with pytest.raises(InvalidInputError, match="pinyin"):
        pronunciation_mark("guox", 1)
