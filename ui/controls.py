"""Markup controls for the Target text box: language tag, pronunciation marks, paralinguistic tags.

The model reads its controls from the text itself, so these controls only write text: a
dialect/language tag in front (``[Japanese]…``), a polyphone's pinyin and tone in place of
the character (``guo4``), or a paralinguistic tag at the end (``…[exhale]``). The editing
logic is in plain functions, so tests can check what reaches the prompt without a browser.
"""

from __future__ import annotations

import re

import gradio as gr

from runners.edit_vocab import (
    CURRENT_PARALINGUISTIC_TAGS,
    CURRENT_RELEASE,
    LANGUAGE_TAG_SPECS,
    LANGUAGE_TAGS,
    PARALINGUISTIC_TAG_SPECS,
)
from runners.errors import InvalidInputError
from runners.markup import pronunciation_mark

NO_LANGUAGE = "Mandarin / English (no tag)"
_LEADING_LANGUAGE = re.compile(r"^\s*(?:" + "|".join(re.escape(t) for t in LANGUAGE_TAGS) + r")\s*", re.IGNORECASE)
_SOUNDS = {t.tag: t.description for t in PARALINGUISTIC_TAG_SPECS}


def set_language(text: str, tag: str | None) -> str:
    """``text`` with its leading language tag replaced by ``tag`` (None or NO_LANGUAGE removes it)."""
    body = _LEADING_LANGUAGE.sub("", text or "", count=1)
    if not tag or tag == NO_LANGUAGE:
        return body
    if tag not in LANGUAGE_TAGS:
        raise InvalidInputError(f"unknown language tag {tag}; choose one of {' '.join(LANGUAGE_TAGS)}",
                                field="language")
    return tag + body


def insert_pronunciation(text: str, pinyin: str, tone: int | str, character: str = "") -> str:
    """Force a reading: ``character``'s first occurrence becomes ``pinyin`` + ``tone``, else the mark is appended.

    Repeating it walks along the text, so ``过过过`` can get three different readings.
    """
    mark = pronunciation_mark(pinyin, int(tone))
    text = text or ""
    character = (character or "").strip()
    if character and character in text:
        return text.replace(character, mark, 1)
    return text + mark


def insert_tag(text: str, tag: str) -> str:
    """``text`` with a paralinguistic tag at its end, where the sound goes."""
    return (text or "").rstrip() + tag


def add_markup_controls(target: gr.Textbox) -> None:
    """Controls that write markup into ``target``; call it inside the Blocks, after ``target`` is made."""

    def on_language(text: str, choice: str) -> str:
        return set_language(text, choice)

    def on_pronounce(text: str, pinyin: str, tone: str, character: str) -> str:
        try:
            return insert_pronunciation(text, pinyin, tone, character)
        except InvalidInputError as exc:
            raise gr.Error(str(exc)) from None

    with gr.Accordion("Language, pronunciation and sound tags for Target text", open=False,
                      elem_id="editx-markup"):
        language = gr.Radio([NO_LANGUAGE, *LANGUAGE_TAGS], value=NO_LANGUAGE, label="Language or dialect",
                            info=", ".join(f"{t.tag} {t.description}" for t in LANGUAGE_TAG_SPECS),
                            elem_id="editx-language")
        language.input(on_language, [target, language], target)
        with gr.Row():
            pinyin = gr.Textbox(label="Pinyin (no tone marks)", placeholder="guo", max_lines=1,
                                elem_id="editx-pinyin")
            tone = gr.Dropdown(["1", "2", "3", "4", "5"], value="4", label="Tone (5 = neutral)",
                               elem_id="editx-tone")
            character = gr.Textbox(label="Character to replace (first one left; empty = append)", max_lines=1,
                                   elem_id="editx-polyphone")
            pronounce = gr.Button("Insert pronunciation", size="sm", elem_id="editx-pronounce")
        pronounce.click(on_pronounce, [target, pinyin, tone, character], target)
        gr.Markdown(f"Sounds of the {CURRENT_RELEASE} release (added at the end of Target text):")
        with gr.Row():
            for tag in CURRENT_PARALINGUISTIC_TAGS:
                button = gr.Button(tag, size="sm", min_width=60, elem_classes=["editx-tag"])
                button.click(lambda text, tag=tag: insert_tag(text, tag), target, target)
        gr.Markdown("Sounds: " + "; ".join(f"`{tag}` {_SOUNDS[tag]}" for tag in CURRENT_PARALINGUISTIC_TAGS))
