"""The edit vocabulary, defined once: the API, the UI and validation all read it.

Values follow the official edit configuration (UPSTREAM.md §2.4).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from runners.errors import InvalidInputError

EditType = Literal["emotion", "style", "speed", "paralinguistic", "denoise", "vad"]

EMOTIONS: tuple[str, ...] = (
    "happy", "angry", "sad", "humour", "confusion", "disgusted", "empathy", "embarrass",
    "fear", "surprised", "excited", "depressed", "coldness", "admiration", "remove",
)
STYLES: tuple[str, ...] = (
    "serious", "arrogant", "child", "older", "girl", "pure", "sister", "sweet", "ethereal",
    "whisper", "gentle", "recite", "generous", "act_coy", "warm", "shy", "comfort",
    "authority", "chat", "radio", "soulful", "story", "vivid", "program", "news",
    "advertising", "roar", "murmur", "shout", "deeply", "loudly", "remove", "exaggerated",
)
SPEEDS: tuple[str, ...] = ("faster", "slower", "more faster", "more slower")
PARALINGUISTIC_TAGS: tuple[str, ...] = (
    "[Breathing]", "[Laughter]", "[Surprise-oh]", "[Confirmation-en]", "[Uhm]",
    "[Surprise-ah]", "[Surprise-wa]", "[Sigh]", "[Question-ei]", "[Dissatisfaction-hnn]",
)
LANGUAGE_TAGS: tuple[str, ...] = ("[Sichuanese]", "[Cantonese]", "[Japanese]", "[Korean]")


class EditTypeSpec(BaseModel):
    """One edit type: its allowed ``edit_info`` values and what else it needs."""

    name: EditType
    values: list[str] = Field(description="allowed edit_info values; empty when the type takes none")
    needs_transcript: bool = Field(description="whether the instruction quotes the input audio's text")
    needs_target_text: bool = Field(description="whether a tagged target text is required")
    description: str


class EditVocabulary(BaseModel):
    """Everything a client needs to build menus and validate requests."""

    edit_types: list[EditTypeSpec]
    paralinguistic_tags: list[str]
    language_tags: list[str]

    def spec(self, edit_type: str) -> EditTypeSpec:
        for s in self.edit_types:
            if s.name == edit_type:
                return s
        names = ", ".join(s.name for s in self.edit_types)
        raise InvalidEditError(f"unknown edit_type {edit_type!r}; choose one of: {names}", field="edit_type")


class InvalidEditError(InvalidInputError):
    """An edit request names a type or value outside the vocabulary."""


VOCABULARY = EditVocabulary(
    edit_types=[
        EditTypeSpec(name="emotion", values=list(EMOTIONS), needs_transcript=True, needs_target_text=False,
                     description="make the speech more of an emotion ('remove' strips emotion)"),
        EditTypeSpec(name="style", values=list(STYLES), needs_transcript=True, needs_target_text=False,
                     description="make the speech more of a speaking style ('remove' strips style)"),
        EditTypeSpec(name="speed", values=list(SPEEDS), needs_transcript=True, needs_target_text=False,
                     description="speak faster or slower"),
        EditTypeSpec(name="paralinguistic", values=[], needs_transcript=True, needs_target_text=True,
                     description="insert non-verbal sounds where the target text has tags such as [Laughter]"),
        EditTypeSpec(name="denoise", values=[], needs_transcript=False, needs_target_text=False,
                     description="remove background noise"),
        EditTypeSpec(name="vad", values=[], needs_transcript=False, needs_target_text=False,
                     description="remove silent portions"),
    ],
    paralinguistic_tags=list(PARALINGUISTIC_TAGS),
    language_tags=list(LANGUAGE_TAGS),
)


def validate_edit(edit_type: str, edit_info: str | None, target_text: str | None = None) -> str | None:
    """Check an edit request against the vocabulary; returns the normalized edit_info.

    Raises :class:`InvalidEditError` with a message naming the allowed values.
    """
    spec = VOCABULARY.spec(edit_type)
    info = (edit_info or "").strip() or None
    if spec.values:
        if info is None:
            raise InvalidEditError(
                f"edit_type {edit_type!r} needs edit_info, one of: {', '.join(spec.values)}", field="edit_info"
            )
        if info not in spec.values:
            raise InvalidEditError(
                f"unknown edit_info {info!r} for edit_type {edit_type!r}; choose one of: {', '.join(spec.values)}",
                field="edit_info",
            )
        return info
    if info is not None:
        raise InvalidEditError(f"edit_type {edit_type!r} takes no edit_info (got {info!r})", field="edit_info")
    if spec.needs_target_text and not (target_text or "").strip():
        tags = " ".join(PARALINGUISTIC_TAGS)
        raise InvalidEditError(
            f"edit_type {edit_type!r} needs target_text: the transcript with tags inserted, using {tags}",
            field="target_text",
        )
    return None
