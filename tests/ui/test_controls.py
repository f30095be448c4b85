"""The Target-text markup controls: what they write reaches the prompt ids, in both prompt layouts."""

from __future__ import annotations


import gradio as gr
import pytest

from runners.text.vocab import CURRENT_PARALINGUISTIC_TAGS, LANGUAGE_TAGS
from runners.errors import InvalidInputError
from runners.text.markup import check_markup
from runners.text.prompts import PromptBuilder
from runners.models.tokenizers.text_tokenizer import TextTokenizer
from runners.models.tiny import build_tiny_model_root
from ui.controls import NO_LANGUAGE, add_markup_controls, insert_pronunciation, insert_tag, set_language


@pytest.fixture(scope="module", params=["november", "chat_template"])
def tokenizer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    root = build_tiny_model_root(tmp_path_factory.mktemp(request.param), seed=0, parts={"step1"},
                                 chat_template=request.param == "chat_template")
    return TextTokenizer(root / "Step-Audio-EditX")


def contains(haystack: list[int], needle: list[int]) -> bool:
    return any(haystack[i:i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def test_language_and_pronunciation_marks_reach_the_prompt(tokenizer: TextTokenizer) -> None:
    text = set_language("我也想过过过儿", "[Japanese]")
    for pinyin, tone in (("guo", 4), ("guo", 4), ("guo", 1)):
        text = insert_pronunciation(text, pinyin, tone, "过")
    assert text == "[Japanese]我也想guo4guo4guo1儿"
    assert check_markup(text, False, "target_text") == text  # the service accepts what the controls write
    builder = PromptBuilder(tokenizer)
    ids = builder.clone("a test prompt", [1, 2, 1030, 1031, 1032], text, "debug")
    human = ids[ids.index(tokenizer.eot_id) + 1:]  # the turns after the system turn
    tag_ids = tokenizer.encode("[Japanese]", add_special_tokens=False)
    # at the start of the turn's text the tag gets no word-boundary piece, in either layout
    tag_ids = tag_ids[1:] if tokenizer.id_to_token(tag_ids[0]) == "\u2581" else tag_ids
    assert contains(human, tag_ids)
    assert "[Japanese]我也想guo4guo4guo1儿" in tokenizer.decode(human)
    mark_ids = tokenizer.encode("想guo4guo4guo1儿", add_special_tokens=False)[1:]
    assert contains(human, mark_ids[-6:])


def test_language_choice_replaces_the_tag() -> None:
    assert set_language("[Cantonese] 你好", "[Korean]") == "[Korean]你好"
    assert set_language("[korean]안녕", NO_LANGUAGE) == "안녕"
    with pytest.raises(InvalidInputError):
        set_language("hi", "[Klingon]")


def test_pronunciation_without_a_character_appends_and_bad_tones_are_refused() -> None:
    assert insert_pronunciation("我想", "guo", "4") == "我想guo4"
    assert insert_pronunciation("我想", "guo", 4, "过") == "我想guo4"  # no such character: appended
    with pytest.raises(InvalidInputError, match="tone"):
        insert_pronunciation("我想", "guo", 7)


def test_every_current_tag_has_a_button() -> None:
    assert insert_tag("Great ", "[exhale]") == "Great[exhale]"
    with gr.Blocks() as demo:
        target = gr.Textbox()
        add_markup_controls(target)
    labels = [b.value for b in demo.blocks.values() if isinstance(b, gr.Button)]
    assert [x for x in labels if x.startswith("[")] == list(CURRENT_PARALINGUISTIC_TAGS)
    radios = [b for b in demo.blocks.values() if isinstance(b, gr.Radio)]
    assert [c[0] for c in radios[0].choices] == [NO_LANGUAGE, *LANGUAGE_TAGS]
