"""The edit vocabulary, defined once: the API, the UI and validation all read it.

Edit types and values are the official edit configuration. Paralinguistic tags carry the
release whose documentation first listed them: the November 2025 model's ten (capitalised,
``[Laughter]``) and the 2026-01-29 release's table (``[laugh]``, ``[exhale]``,
``[clears throat]``, …). Both spellings stay accepted, because a tag goes into the edit
instruction exactly as the user wrote it.
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
Release = Literal["2025-11", "2026-01-29"]
RELEASES: tuple[str, ...] = ("2025-11", "2026-01-29")
CURRENT_RELEASE: Release = "2026-01-29"


class TagSpec(BaseModel):
    """One inline tag: how it is written, what it does, and which releases document it."""

    tag: str = Field(description="the tag exactly as written in text, brackets included")
    description: str
    release: Release = Field(description="the model release whose documentation first lists the tag")
    releases: list[Release] = Field(description="every release whose documentation lists the tag")


def _tag(tag: str, description: str, *releases: Release) -> TagSpec:
    return TagSpec(tag=tag, description=description, release=releases[0], releases=list(releases))


_NOV: Release = "2025-11"
_JAN: Release = "2026-01-29"
PARALINGUISTIC_TAG_SPECS: tuple[TagSpec, ...] = (
    # The November 2025 model's ten, in the order of its help text.
    _tag("[Breathing]", "breathing", _NOV),
    _tag("[Laughter]", "laughter", _NOV),
    _tag("[Surprise-oh]", 'surprise: "Oh"', _NOV, _JAN),
    _tag("[Confirmation-en]", 'confirming: "En"', _NOV, _JAN),
    _tag("[Uhm]", 'hesitation: "Uhm"', _NOV),
    _tag("[Surprise-ah]", 'surprise: "Ah"', _NOV, _JAN),
    _tag("[Surprise-wa]", 'surprise: "Wa"', _NOV, _JAN),
    _tag("[Sigh]", "sighing", _NOV),
    _tag("[Question-ei]", 'questioning: "Ei"', _NOV, _JAN),
    _tag("[Dissatisfaction-hnn]", 'dissatisfied: "Hnn"', _NOV, _JAN),
    # The 2026-01-29 release's table, in its order, where it spells a tag differently or adds one.
    _tag("[sigh]", "sighing", _JAN),
    _tag("[inhale]", "inhaling", _JAN),
    _tag("[laugh]", "laughter", _JAN),
    _tag("[chuckle]", "chuckling", _JAN),
    _tag("[exhale]", "exhaling", _JAN),
    _tag("[clears throat]", "throat clearing", _JAN),
    _tag("[snort]", "snorting", _JAN),
    _tag("[giggle]", "giggling", _JAN),
    _tag("[cough]", "coughing", _JAN),
    _tag("[breath]", "breathing", _JAN),
    _tag("[uhm]", 'hesitation: "Uhm"', _JAN),
    _tag("[Surprise-yo]", 'surprise: "Yo"', _JAN),
    _tag("[Question-ah]", 'questioning: "Ah"', _JAN),
    _tag("[Question-en]", 'questioning: "En"', _JAN),
    _tag("[Question-yi]", 'questioning: "Yi"', _JAN),
    _tag("[Question-oh]", 'questioning: "Oh"', _JAN),
)
PARALINGUISTIC_TAGS: tuple[str, ...] = tuple(t.tag for t in PARALINGUISTIC_TAG_SPECS)
CURRENT_PARALINGUISTIC_TAGS: tuple[str, ...] = tuple(
    t.tag for t in PARALINGUISTIC_TAG_SPECS if CURRENT_RELEASE in t.releases
)
LANGUAGE_TAG_SPECS: tuple[TagSpec, ...] = (
    _tag("[Sichuanese]", "Sichuanese dialect", _NOV, _JAN),
    _tag("[Cantonese]", "Cantonese", _NOV, _JAN),
    _tag("[Japanese]", "Japanese (since the 2025-11-28 model)", _NOV, _JAN),
    _tag("[Korean]", "Korean (since the 2025-11-28 model)", _NOV, _JAN),
)
LANGUAGE_TAGS: tuple[str, ...] = tuple(t.tag for t in LANGUAGE_TAG_SPECS)
PRONUNCIATION_HELP = (
    "Chinese polyphones: write the character's pinyin with its tone digit (1-5) in place of the character, "
    "e.g. 我也想guo4guo4guo1儿guo4guo4的生活"
)


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
    paralinguistic_tags: list[str] = Field(description="every accepted paralinguistic tag, of every release")
    language_tags: list[str] = Field(description="dialect/language tags, written at the start of a clone text")
    current_release: Release = Field(description="the model release this vocabulary follows")
    paralinguistic_tag_details: list[TagSpec] = Field(description="each paralinguistic tag with its releases")
    language_tag_details: list[TagSpec]
    pronunciation: str = Field(description="how to force the reading of a Chinese polyphone")

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
    current_release=CURRENT_RELEASE,
    paralinguistic_tag_details=list(PARALINGUISTIC_TAG_SPECS),
    language_tag_details=list(LANGUAGE_TAG_SPECS),
    pronunciation=PRONUNCIATION_HELP,
)


def paralinguistic_help() -> str:
    """One line for users: the current release's tags first, then the older spellings that still work."""
    older = [t for t in PARALINGUISTIC_TAGS if t not in CURRENT_PARALINGUISTIC_TAGS]
    return (f"tags of the {CURRENT_RELEASE} release: {' '.join(CURRENT_PARALINGUISTIC_TAGS)}; "
            f"earlier spellings also accepted: {' '.join(older)}")


def validate_edit(edit_type: str, edit_info: str | None, target_text: str | None = None) -> str | None:
    """Check an edit request against the vocabulary; returns the normalized edit_info.

    Raises :class:`InvalidEditError` with a message naming the allowed values; a paralinguistic
    target text's markup is checked too (an unknown leading tag is an InvalidInputError).
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
        raise InvalidEditError(
            f"edit_type {edit_type!r} needs target_text: the transcript with tags inserted ({paralinguistic_help()})",
            field="target_text",
        )
    if spec.needs_target_text:
        from runners.markup import check_markup  # markup reads this module's tag lists

        check_markup(target_text or "", allow_paralinguistic=True, field="target_text")
    return None
