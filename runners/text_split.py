"""Split a long clone text into sentence-sized pieces.

A clone is generated per piece (the LLM's budget and the quality of long generations both favour
sentences), then the pieces' audio is joined with short cross-fades (:mod:`runners.pipeline.crossfade`).

Rules of :func:`split_text`:

- Whitespace is normalised (every run becomes one space; the ends are stripped). A blank line
  (paragraph break) always ends a sentence, so a title without a full stop stays apart.
- A sentence ends after ``. ! ? ; …`` (a run of them, such as ``?!`` or ``...``) followed by any
  closing quotes or brackets, when a space, the end of the text or a CJK character follows; after
  ``。 ！ ？ ；`` (and their closers) it always ends. A full stop does not end a sentence after a
  common abbreviation (``Dr.``, ``Mr.``, ``vs.``, ``e.g.`` …), after a single letter (initials such as
  ``J. R. R.``) or inside a number (``3.5``, which also has no space after the dot).
- Nothing is split inside a ``[tag]``; a tag that starts a sentence (``[Laughter] Ha.``) stays with it.
- A leading language tag (``[Cantonese]``, ``[Sichuanese]``, ``[Japanese]``, ``[Korean]``) applies to the
  whole text, so it is repeated at the start of every piece; its length counts towards ``max_chars``.
- A sentence longer than ``max_chars`` is split after commas (``, ， 、`` and ``: ：``), then at spaces,
  packing as much as fits into each piece; only a run with neither (CJK without punctuation, or a
  single "word" longer than the limit) is split between characters, so every piece fits.
- No piece is empty; the pieces, joined, equal the normalised text up to whitespace (and the
  repeated language tag).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from runners.edit_vocab import LANGUAGE_TAGS

DEFAULT_MAX_CHARS = 300

_LATIN_ENDS = ".!?;…"
_CJK_ENDS = "。！？；"
_CLOSERS = "\"'”’)]}»」』》）】〉〕］｝"
_COMMAS = ",，、:："
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt vs e.g i.e a.m p.m approx fig figs eq dept inc ltd co corp gen
    col lt capt sgt rev hon gov pres sen rep ave blvd rd jan feb apr jun jul aug sep sept oct nov dec
    cf al""".split()
)
_CJK = re.compile(r"[\u2e80-\u2fff\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\uac00-\ud7af]")
_WORD_BEFORE_DOT = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_INITIAL = re.compile(r"(?:^|[\s(\"'.])[A-HJ-Z]$")  # "J. Smith", "J.R.R. Tolkien"; not "I."
_TAG = re.compile(r"\[[^\[\]\s]{1,40}(?: [^\[\]\s]{1,40})?\]")  # [Laughter], [Cantonese], [clears throat]
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_LANGUAGE_TAG = re.compile("^(" + "|".join(re.escape(t) for t in LANGUAGE_TAGS) + r")\s*", re.IGNORECASE)


def normalize_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def split_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Pieces of ``text`` for one clone each, every one ≤ ``max_chars`` (see the module docstring)."""
    paragraphs = [normalize_whitespace(p) for p in _PARAGRAPH_BREAK.split(text)]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        return []
    tag = ""
    m = _LANGUAGE_TAG.match(paragraphs[0])
    if m:
        tag, paragraphs[0] = m.group(1), paragraphs[0][m.end() :]
        paragraphs = [p for p in paragraphs if p]
        if not paragraphs:
            return [tag]
    limit = max_chars - (len(tag) + 1 if tag else 0)
    if limit < 1:
        raise ValueError(f"max_chars={max_chars} leaves no room next to the language tag {tag}")
    pieces: list[str] = []
    for paragraph in paragraphs:
        for sentence in split_sentences(paragraph):
            pieces.extend(_fit(sentence, limit))
    return [f"{tag} {p}" for p in pieces] if tag else pieces


def split_sentences(text: str) -> list[str]:
    """Sentences of normalised ``text``, in order, none empty (no length limit)."""
    out: list[str] = []
    tags = _tag_ends(text)
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if i in tags:
            i = tags[i]
            continue
        if ch in _LATIN_ENDS or ch in _CJK_ENDS:
            j = i
            while j < n and (text[j] in _LATIN_ENDS or text[j] in _CJK_ENDS):
                j += 1
            while j < n and text[j] in _CLOSERS:
                j += 1
            if _ends_sentence(text, i, j):
                piece = text[start:j].strip()
                if piece:
                    out.append(piece)
                start = j
            i = j
            continue
        i += 1
    rest = text[start:].strip()
    if rest:
        out.append(rest)
    return out


def _tag_ends(text: str) -> dict[int, int]:
    """Start index → end index of every [tag] in text (nothing is split inside one)."""
    return {m.start(): m.end() for m in _TAG.finditer(text)}


def _ends_sentence(text: str, first: int, after: int) -> bool:
    """Whether the terminator run text[first:after] (with its closers) ends a sentence."""
    run = text[first:after]
    if after >= len(text):
        return True
    if any(c in _CJK_ENDS for c in run):
        return True
    nxt = text[after]
    if nxt != " " and not _CJK.match(nxt):
        return False  # "3.5", "a.b", "Hi!there": no sentence end
    if text[first] == "." and (after - first == 1 or text[first + 1] in _CLOSERS):
        before = text[:first]
        word = _WORD_BEFORE_DOT.search(before)
        if word and word.group(1).lower() in _ABBREVIATIONS:
            return False
        if _INITIAL.search(before):
            return False  # an initial: "J. Smith"
    return True


def _fit(sentence: str, limit: int) -> list[str]:
    """Split one sentence into pieces ≤ limit: after commas, then at spaces, then between characters."""
    if len(sentence) <= limit:
        return [sentence]
    clauses = _split_keep(sentence, _COMMAS)
    out: list[str] = []
    for clause in _pack(clauses, limit, " "):
        if len(clause) <= limit:
            out.append(clause)
            continue
        for chunk in _pack(_words(clause), limit, " "):
            if len(chunk) <= limit:
                out.append(chunk)
            else:
                out.extend(_split_chars(chunk, limit))
    return [p for p in (q.strip() for q in out) if p]


def _words(clause: str) -> list[str]:
    """The clause split at its spaces, except the space inside a tag such as [clears throat]."""
    inside = {i for start, end in _tag_ends(clause).items() for i in range(start, end)}
    words, start = [], 0
    for i, ch in enumerate(clause):
        if ch == " " and i not in inside:
            words.append(clause[start:i])
            start = i + 1
    words.append(clause[start:])
    return words


def _split_keep(sentence: str, marks: str) -> list[str]:
    """Split after each mark outside [tags], keeping the mark with the text before it.

    A Latin comma or colon counts only before a space ("1,000" and "10:30" stay whole).
    """
    parts: list[str] = []
    tags = _tag_ends(sentence)
    start = 0
    i = 0
    n = len(sentence)
    while i < n:
        if i in tags:
            i = tags[i]
            continue
        ch = sentence[i]
        if ch in marks and (ord(ch) > 0x7F or i + 1 == n or sentence[i + 1] == " "):
            parts.append(sentence[start : i + 1].strip())
            start = i + 1
        i += 1
    parts.append(sentence[start:].strip())
    return [p for p in parts if p]


def _pack(parts: Sequence[str], limit: int, sep: str) -> list[str]:
    """Greedily join consecutive parts with ``sep`` while the result stays ≤ limit."""
    out: list[str] = []
    current = ""
    for part in parts:
        if not part:
            continue
        candidate = f"{current}{_joiner(current, part, sep)}{part}" if current else part
        if len(candidate) <= limit or not current:
            current = candidate
        else:
            out.append(current)
            current = part
    if current:
        out.append(current)
    return out


def _joiner(left: str, right: str, sep: str) -> str:
    """No space between two CJK runs that were not separated by one (comma splits of CJK text)."""
    if _CJK.match(left[-1]) and _CJK.match(right[0]):
        return ""
    return sep


def _split_chars(run: str, limit: int) -> list[str]:
    """Last resort: cut a run without spaces or commas between characters, never inside a [tag]."""
    units = [u for m in re.finditer(r"\[[^\[\]\s]{1,40}\]|.", run) for u in ([m.group()] if len(m.group()) <= limit else m.group())]
    out: list[str] = []
    current = ""
    for unit in units:
        if current and len(current) + len(unit) > limit:
            out.append(current)
            current = ""
        current += unit
    if current:
        out.append(current)
    return out
