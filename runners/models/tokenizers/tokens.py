"""Audio token id spaces and the 2:3 interleave of the dual codebook.

Two id spaces exist (UPSTREAM.md §1.4):
- *codec ids* 0..5119: vq02 codes as-is (0..1023), vq06 codes shifted by 1024;
- *LLM ids* = 65536 + codec id, the ids of the ``<audio_N>`` added tokens.
Each 120 ms group holds 2 vq02 codes followed by 3 vq06 codes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

VQ02_CODES = 1024
VQ06_CODES = 4096
CODEC_VOCAB = VQ02_CODES + VQ06_CODES  # 5120 codec ids
LLM_AUDIO_OFFSET = 65536
VQ02_PER_GROUP = 2
VQ06_PER_GROUP = 3
GROUP_SIZE = VQ02_PER_GROUP + VQ06_PER_GROUP
GROUP_SECONDS = 0.12
TOKENS_PER_SECOND = GROUP_SIZE / GROUP_SECONDS  # 41.67
DECODER_PAD = 1024  # filler of the vq02 stream's third slot in each group

_AUDIO_TOKEN = re.compile(r"<audio_(\d+)>")


def interleave(vq02: Sequence[int], vq06: Sequence[int]) -> list[int]:
    """Merge raw vq02 (0..1023) and vq06 (0..4095) codes into codec ids.

    Only whole groups are kept: leftovers of the longer stream are dropped.
    """
    groups = min(len(vq02) // VQ02_PER_GROUP, len(vq06) // VQ06_PER_GROUP)
    out: list[int] = []
    for g in range(groups):
        out.extend(int(c) for c in vq02[g * 2 : g * 2 + 2])
        out.extend(VQ02_CODES + int(c) for c in vq06[g * 3 : g * 3 + 3])
    return out


def deinterleave(codec_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """Split codec ids back into raw vq02 and vq06 codes (whole groups only)."""
    vq02: list[int] = []
    vq06: list[int] = []
    for g in range(len(codec_ids) // GROUP_SIZE):
        group = codec_ids[g * GROUP_SIZE : (g + 1) * GROUP_SIZE]
        vq02.extend(int(c) for c in group[:2])
        vq06.extend(int(c) - VQ02_CODES for c in group[2:])
    return vq02, vq06


def to_llm_ids(codec_ids: Sequence[int]) -> list[int]:
    return [LLM_AUDIO_OFFSET + int(c) for c in codec_ids]


def from_llm_ids(llm_ids: Sequence[int]) -> list[int]:
    """LLM ids back to codec ids; ids outside the audio range are an error."""
    out = [int(i) - LLM_AUDIO_OFFSET for i in llm_ids]
    bad = [i for i, c in zip(llm_ids, out) if not 0 <= c < CODEC_VOCAB]
    if bad:
        raise ValueError(f"not audio token ids: {bad[:8]}")
    return out


def to_token_string(codec_ids: Sequence[int]) -> str:
    """The prompt form: ``<audio_N>`` per codec id, no separators."""
    return "".join(f"<audio_{int(c)}>" for c in codec_ids)


def parse_token_string(text: str) -> list[int]:
    return [int(m) for m in _AUDIO_TOKEN.findall(text)]


def to_frame_pairs(codec_ids: Sequence[int]) -> torch.Tensor:
    """Codec ids → (1, T25, 2) LongTensor of 25 Hz frame pairs for the decoder.

    Each group [a, b, c, d, e] becomes stream 0 = (a, b, PAD) and stream 1 =
    (c+1, d+1, e+1): the decoder's embedding reserves 1024 for PAD, so vq06
    codec ids move up by one. An incomplete trailing group is padded.
    """
    ids = [int(c) for c in codec_ids]
    rest = len(ids) % GROUP_SIZE
    if rest:
        # pad the tail with the first entry of its stream's kind (values are arbitrary filler)
        filler = [0, 0, VQ02_CODES, VQ02_CODES, VQ02_CODES]
        ids = ids + filler[rest:]
    stream0: list[int] = []
    stream1: list[int] = []
    for g in range(len(ids) // GROUP_SIZE):
        a, b, c, d, e = ids[g * GROUP_SIZE : (g + 1) * GROUP_SIZE]
        stream0.extend([a, b, DECODER_PAD])
        stream1.extend([c + 1, d + 1, e + 1])
    return torch.tensor([stream0, stream1], dtype=torch.long).T.unsqueeze(0)


def seconds_for_tokens(n_tokens: int) -> float:
    return n_tokens / TOKENS_PER_SECOND
