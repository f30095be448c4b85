"""runners.models.tokenizers.tokens: the two id spaces, the 2:3 interleave and the decoder's frame pairs."""

from __future__ import annotations

import pytest
import torch

from runners.models.tokenizers.tokens import (
    DECODER_PAD,
    LLM_AUDIO_OFFSET,
    deinterleave,
    from_llm_ids,
    interleave,
    parse_token_string,
    seconds_for_tokens,
    to_frame_pairs,
    to_llm_ids,
    to_token_string,
)


def test_interleave_layout_and_offsets() -> None:
    vq02 = [5, 6, 7, 8]
    vq06 = [0, 1, 4095, 10, 11, 12]
    assert interleave(vq02, vq06) == [5, 6, 1024, 1025, 5119, 7, 8, 1034, 1035, 1036]


@pytest.mark.parametrize(("n02", "n06", "groups"), [(4, 6, 2), (5, 6, 2), (4, 8, 2), (7, 9, 3), (1, 30, 0), (10, 2, 0)])
def test_leftovers_are_dropped(n02: int, n06: int, groups: int) -> None:
    ids = interleave(list(range(n02)), list(range(n06)))
    assert len(ids) == 5 * groups


def test_interleave_roundtrip() -> None:
    vq02 = [i * 37 % 1024 for i in range(20)]
    vq06 = [i * 911 % 4096 for i in range(30)]
    assert deinterleave(interleave(vq02, vq06)) == (vq02, vq06)
    # a partial trailing group is ignored on the way back too
    assert deinterleave(interleave(vq02, vq06) + [1, 2]) == (vq02, vq06)


def test_llm_ids_offset_and_validation() -> None:
    codec = [0, 1023, 1024, 5119]
    llm = to_llm_ids(codec)
    assert llm == [65536, 66559, 66560, 70655]
    assert LLM_AUDIO_OFFSET == 65536
    assert from_llm_ids(llm) == codec
    with pytest.raises(ValueError, match="not audio"):
        from_llm_ids([3])  # EOS is not an audio token
    with pytest.raises(ValueError):
        from_llm_ids([65536 + 5120])


def test_token_string_form_and_parse() -> None:
    codec = [12, 900, 1024, 3000, 5119]
    text = to_token_string(codec)
    assert text == "<audio_12><audio_900><audio_1024><audio_3000><audio_5119>"
    assert parse_token_string(text) == codec
    assert parse_token_string("say <audio_7> and\n<audio_1030>!") == [7, 1030]
    assert to_token_string([]) == ""


def test_frame_pairs_shape_pad_and_shift() -> None:
    codec = interleave([1, 2, 3, 4], [0, 5, 4095, 7, 8, 9])
    pairs = to_frame_pairs(codec)
    assert pairs.shape == (1, 6, 2) and pairs.dtype == torch.long
    assert pairs[0, :, 0].tolist() == [1, 2, DECODER_PAD, 3, 4, DECODER_PAD]
    # vq06 codec ids (1024..5119) move up by one so 1024 stays free for PAD
    assert pairs[0, :, 1].tolist() == [1025, 1030, 5120, 1032, 1033, 1034]
    assert int(pairs.max()) <= 5120


def test_frame_pairs_pad_an_incomplete_group() -> None:
    codec = interleave([1, 2], [3, 4, 5]) + [6, 7, 1030]
    pairs = to_frame_pairs(codec)
    assert pairs.shape == (1, 6, 2)
    assert pairs[0, 3:, 0].tolist() == [6, 7, DECODER_PAD]
    assert pairs[0, 3, 1] == 1031


def test_token_rate() -> None:
    assert seconds_for_tokens(125) == pytest.approx(3.0)
