"""Long-text splitting for clones and the cross-faded join of the pieces' audio."""

from __future__ import annotations

import re

import numpy as np
import pytest

from runners.pipeline.crossfade import CrossfadeJoiner, join_with_crossfade
from runners.text_split import DEFAULT_MAX_CHARS, split_sentences, split_text


def _bare(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _rejoins(pieces: list[str], text: str, tag: str = "") -> bool:
    body = [p[len(tag) :] if tag and p.startswith(tag) else p for p in pieces]
    return _bare(tag + "".join(body)) == _bare(text)


ENGLISH = (
    "Dr. Smith arrived at 3.5 minutes past nine.  He said: \"We start now.\" Did anyone object? "
    "No! Mr. and Mrs. Brown, e.g. the neighbours, stayed; the rest left… J. R. R. Tolkien was not there. "
    "The bill was $1,000.50 in total."
)


def test_english_paragraph_splits_at_sentence_ends_only() -> None:
    assert split_text(ENGLISH) == [
        "Dr. Smith arrived at 3.5 minutes past nine.",
        'He said: "We start now."',
        "Did anyone object?",
        "No!",
        "Mr. and Mrs. Brown, e.g. the neighbours, stayed;",
        "the rest left…",
        "J. R. R. Tolkien was not there.",
        "The bill was $1,000.50 in total.",
    ]


def test_chinese_paragraph_splits_at_full_width_marks_and_keeps_closing_quotes() -> None:
    text = "今天天气很好。我们去公园吧！他说：“你来吗？”我说：“好。”然后我们走了；很开心"
    assert split_text(text) == ["今天天气很好。", "我们去公园吧！", "他说：“你来吗？”", "我说：“好。”", "然后我们走了；", "很开心"]


def test_mixed_chinese_and_english() -> None:
    text = "我喜欢 Python. It is great! 你呢？I think so."
    assert split_text(text) == ["我喜欢 Python.", "It is great!", "你呢？", "I think so."]


def test_decimals_abbreviations_and_words_with_dots_are_not_split() -> None:
    for text in ("Pi is 3.14159 roughly", "See e.g. the figure", "Dr. Who and St. Paul met", "Visit example.com today"):
        assert split_text(text) == [text]
    assert split_text("So do I. Then we go.") == ["So do I.", "Then we go."]  # "I." is not an initial


def test_whitespace_is_normalised_and_empty_input_gives_no_pieces() -> None:
    assert split_text("  Hello\n there.\tHow   are you?  ") == ["Hello there.", "How are you?"]
    assert split_text("") == [] and split_text(" \n\t ") == []


def test_a_blank_line_ends_a_sentence_but_a_single_line_break_does_not() -> None:
    text = "Chapter One\n\nIt was a dark night.\nThe end\n \n\n[Laughter] Really"
    assert split_text(text) == ["Chapter One", "It was a dark night.", "The end", "[Laughter] Really"]
    assert split_text("[Korean]\n\n안녕하세요.\n\n감사합니다") == ["[Korean] 안녕하세요.", "[Korean] 감사합니다"]


def test_only_punctuation_is_one_piece() -> None:
    assert split_text("...!!!") == ["...!!!"]
    assert split_text("。。。") == ["。。。"]


def test_tags_stay_with_their_sentence_and_are_never_cut() -> None:
    text = "Great[Laughter], the weather is nice[Surprise-ah]. [Sigh] Oh well. [Breathing]Fine."
    assert split_text(text) == [
        "Great[Laughter], the weather is nice[Surprise-ah].",
        "[Sigh] Oh well.",
        "[Breathing]Fine.",
    ]
    # under a tiny limit a run is cut between characters, but never inside a tag
    pieces = split_text("[Confirmation-en][Dissatisfaction-hnn]abcdefghij", max_chars=25)
    assert pieces == ["[Confirmation-en]", "[Dissatisfaction-hnn]abcd", "efghij"]
    assert _rejoins(pieces, "[Confirmation-en][Dissatisfaction-hnn]abcdefghij")


def test_a_leading_language_tag_is_repeated_on_every_piece() -> None:
    text = "[Cantonese]你好。我係香港人。今日好熱"
    pieces = split_text(text)
    assert pieces == ["[Cantonese] 你好。", "[Cantonese] 我係香港人。", "[Cantonese] 今日好熱"]
    long = "[Sichuanese] " + "，".join(["巴适得很"] * 40) + "。"
    pieces = split_text(long, max_chars=50)
    assert len(pieces) > 2 and all(p.startswith("[Sichuanese] ") and len(p) <= 50 for p in pieces)
    assert _rejoins(pieces, long, "[Sichuanese]")
    # a tag later in the text is an ordinary tag: not repeated
    assert split_text("Hi. [Japanese]こんにちは。") == ["Hi.", "[Japanese]こんにちは。"]


def test_long_sentences_split_at_commas_then_spaces_then_characters() -> None:
    at_commas = "one two three, four five six, seven eight nine, ten eleven twelve."
    assert split_text(at_commas, max_chars=30) == ["one two three, four five six,", "seven eight nine,", "ten eleven twelve."]
    at_spaces = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    pieces = split_text(at_spaces, max_chars=20)
    assert all(len(p) <= 20 for p in pieces) and " ".join(pieces) == at_spaces
    cjk = "今天天气很好我们去公园吧你觉得呢好的走吧"
    pieces = split_text(cjk, max_chars=8)
    assert pieces == ["今天天气很好我们", "去公园吧你觉得呢", "好的走吧"]
    assert split_text("1,000,000 apples and 10:30 am", max_chars=12) == ["1,000,000", "apples and", "10:30 am"]


def test_a_word_longer_than_the_limit_is_the_only_thing_cut_inside() -> None:
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis"
    pieces = split_text(f"The word {word} is long.", max_chars=20)
    assert all(0 < len(p) <= 20 for p in pieces)
    assert pieces[:1] == ["The word"] and pieces[-1] == "is long."
    assert "".join(pieces[1:-1]) == word


def test_three_thousand_characters_split_under_the_limit_and_rejoin() -> None:
    sentences = [
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "Dr. Lee measured 3.75 litres, then wrote it down; nobody checked.",
        "今天我们讨论了很多问题，包括天气、交通和工作。",
        "Why would anyone, in their right mind, walk thirty kilometres in the rain without an umbrella, "
        "a coat, or even a plan, when the bus, which runs every ten minutes, costs almost nothing?",
        "[Laughter] That was funny!",
    ]
    text = " ".join(sentences[i % len(sentences)] for i in range(45))
    assert len(text) > 3000
    for max_chars in (DEFAULT_MAX_CHARS, 120, 40):
        pieces = split_text(text, max_chars=max_chars)
        assert all(0 < len(p) <= max_chars for p in pieces)
        assert _rejoins(pieces, text)
        assert all(p == p.strip() and "  " not in p for p in pieces)
    # 9 rounds of 5 sentences; the second one also ends at its ";" and none exceeds 300 characters
    assert len(split_text(text)) == len(split_sentences(text)) == 9 * 6


def test_unbalanced_brackets_do_not_stop_sentence_splitting() -> None:
    assert split_text("He said [ something. Then left. Done]") == ["He said [ something.", "Then left.", "Done]"]


def test_max_chars_must_leave_room() -> None:
    with pytest.raises(ValueError, match="no room"):
        split_text("[Cantonese]你好", max_chars=10)


SR = 24000


def test_crossfade_join_overlaps_by_the_fade_and_keeps_order() -> None:
    a = np.full(2400, 0.5, dtype=np.float32)
    b = np.full(1200, -0.5, dtype=np.float32)
    c = np.linspace(0, 1, 4800, dtype=np.float32)
    out = join_with_crossfade([a, b, c], SR, fade_s=0.01)
    fade = 240
    assert out.dtype == np.float32 and out.size == a.size + b.size + c.size - 2 * fade
    assert np.all(out[: a.size - fade] == 0.5)
    assert np.all(out[a.size : a.size + b.size - 2 * fade] == -0.5)
    np.testing.assert_array_equal(out[-(c.size - fade) :], c[fade:])
    seam = out[a.size - fade : a.size]  # 0.5 → -0.5 smoothly, no step larger than the ramp allows
    assert seam[0] > 0.49 and seam[-1] < -0.49 and np.all(np.diff(seam) <= 0)
    assert np.max(np.abs(np.diff(seam))) < 4.0 / fade


def test_crossfade_join_with_a_gap_fades_to_silence() -> None:
    a = np.ones(1000, dtype=np.float32)
    b = np.ones(1000, dtype=np.float32)
    out = join_with_crossfade([a, b], SR, fade_s=0.005, gap_s=0.1)
    assert out.size == 2000 + 2400
    assert np.all(out[1000:3400] == 0)
    assert out[999] < 0.01 and out[3400] < 0.01 and out[0] == 1.0 and out[-1] == 1.0


def test_crossfade_join_edge_cases() -> None:
    short = np.ones(10, dtype=np.float32)
    assert join_with_crossfade([], SR).size == 0
    assert join_with_crossfade([np.zeros(0), short], SR).size == 10
    assert join_with_crossfade([short, short], SR, fade_s=0.02).size == 10  # the fade shrinks to the shorter piece
    np.testing.assert_array_equal(join_with_crossfade([short, 2 * short], SR, fade_s=0.0), np.r_[short, 2 * short])
    with pytest.raises(ValueError):
        join_with_crossfade([short], SR, fade_s=-1)


@pytest.mark.parametrize("gap_s", [0.0, 0.05])
def test_streamed_join_equals_the_whole_join(gap_s: float) -> None:
    rng = np.random.default_rng(0)
    sentences = [rng.standard_normal(n).astype(np.float32) for n in (3000, 100, 7001, 480, 0, 2500)]
    whole = join_with_crossfade(sentences, SR, fade_s=0.02, gap_s=gap_s)  # fade = 480 samples
    joiner = CrossfadeJoiner(SR, fade_s=0.02, gap_s=gap_s)
    sent: list[np.ndarray] = []
    for sentence in sentences:
        cuts = np.sort(rng.integers(0, sentence.size + 1, size=4))
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, sentence.size]):
            sent.append(joiner.add(sentence[a:b]))
        sent.append(joiner.end_segment())
    sent.append(joiner.finish())
    streamed = np.concatenate(sent)
    assert streamed.size == whole.size
    np.testing.assert_allclose(streamed, whole, atol=1e-6, rtol=0)
    # the first sentence is sent while it is still arriving (all but the fade is final)
    first = CrossfadeJoiner(SR, fade_s=0.02, gap_s=gap_s)
    assert first.add(sentences[0]).size == 3000 - 480


def test_a_tag_with_a_space_is_never_split() -> None:
    text = "word " * 6 + "[clears throat] and then more words follow here until the end."
    for max_chars in (20, 25, 30, 40):
        pieces = split_text(text, max_chars=max_chars)
        assert all(0 < len(p) <= max_chars for p in pieces)
        assert any("[clears throat]" in p for p in pieces), pieces
