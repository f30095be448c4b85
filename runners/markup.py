"""Checks of the inline markup the model reads in a text: language tags and pronunciation marks.

- A dialect/language tag (``[Japanese]``, ``[Cantonese]``, …) is written once, before the text.
  A misspelt one would be read aloud as words, so a text that starts with an unknown ``[Tag]`` is
  refused with the list of known tags (paralinguistic tags are fine where the text is a
  paralinguistic edit's target). A known tag in another case is rewritten to its official spelling.
- A Chinese polyphone is forced by writing its pinyin and tone digit in place of the character
  (``我也想guo4guo4guo1儿…``). A pinyin-shaped syllable touching a Chinese character with a tone
  digit outside 1-5 is refused, since the model only knows those five.
"""

from __future__ import annotations

import re

from runners.edit_vocab import LANGUAGE_TAGS, PARALINGUISTIC_TAGS
from runners.errors import InvalidInputError

_LEADING_TAG = re.compile(r"^\s*(\[[^\[\]\n]{1,40}\])")
_ANY_TAG = re.compile(r"\[[^\[\]\n]{1,40}\]")
_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_INITIALS = r"(?:zh|ch|sh|[bpmfdtnlgkhjqxrzcsyw])?"
_FINALS = (
    r"(?:iang|iong|uang|ueng|iao|ian|ing|uai|uan|ang|eng|ong|van|üan|ai|ei|ao|ou|an|en|er|ia|ie|iu|in|"
    r"ua|uo|ui|un|ue|ve|vn|üe|ün|a|o|e|i|u|v|ü)"
)
_SYLLABLE = rf"{_INITIALS}{_FINALS}"
# A run of lowercase pinyin syllables, each with one digit, right before or after a Chinese character.
_MARKS = re.compile(rf"(?<![0-9A-Za-zü])((?:{_SYLLABLE}\d)+)(?![0-9a-zü])")
_ONE_MARK = re.compile(r"([a-zü]+)(\d)")
_HAN_CHAR = re.compile(rf"[{_HAN}]")
_LANGUAGE_BY_LOWER = {t.lower(): t for t in LANGUAGE_TAGS}


def pronunciation_mark(pinyin: str, tone: int) -> str:
    """The markup for one polyphone: lowercase pinyin (``v`` or ``ü`` for ü) and its tone digit."""
    syllable = pinyin.strip().lower()
    if not re.fullmatch(_SYLLABLE, syllable):
        raise InvalidInputError(f"{pinyin!r} is not a pinyin syllable (write it without tone marks, e.g. 'guo')",
                                field="pinyin")
    if tone not in range(1, 6):
        raise InvalidInputError(f"tone must be 1-5 (5 = neutral), got {tone}", field="tone")
    return f"{syllable}{tone}"


def _check_pronunciation(text: str, field: str) -> None:
    for run in _MARKS.finditer(text):
        before, after = text[run.start() - 1: run.start()], text[run.end(): run.end() + 1]
        if not (_HAN_CHAR.fullmatch(before or "x") or _HAN_CHAR.fullmatch(after or "x")):
            continue
        for syllable, digit in _ONE_MARK.findall(run.group(1)):
            # single letters next to digits are model names ("a7") far more often than pinyin
            if digit not in "12345" and len(syllable) > 1:
                raise InvalidInputError(
                    f"pronunciation mark {syllable + digit!r}: the tone digit must be 1-5 (5 = neutral), "
                    f"written right after the pinyin, e.g. {syllable}4",
                    field=field,
                )


def check_markup(text: str, allow_paralinguistic: bool, field: str) -> str:
    """``text`` with its markup checked; a known language tag is returned in its official spelling.

    Raises :class:`InvalidInputError` (400, naming ``field``) for an unknown tag at the start, a
    language tag anywhere but the start, or a pronunciation mark with an impossible tone.
    """
    lead = _LEADING_TAG.match(text)
    if lead:
        tag = lead.group(1)
        official = _LANGUAGE_BY_LOWER.get(tag.lower())
        if official is not None:
            text = text[: lead.start(1)] + official + text[lead.end(1):]
        elif not (allow_paralinguistic and tag in PARALINGUISTIC_TAGS):
            known = list(LANGUAGE_TAGS) + (list(PARALINGUISTIC_TAGS) if allow_paralinguistic else [])
            what = "language or paralinguistic tag" if allow_paralinguistic else "language tag"
            raise InvalidInputError(f"unknown {what} {tag} at the start of the text; known: {' '.join(known)}",
                                    field=field)
    body_start = lead.end(1) if lead else 0
    for m in _ANY_TAG.finditer(text, body_start):
        if m.group(0).lower() in _LANGUAGE_BY_LOWER:
            raise InvalidInputError(f"the language tag {m.group(0)} must come first, before the text", field=field)
    _check_pronunciation(text, field)
    return text
