"""Token embedding of the decoder: one table shared by both codebook streams."""

from __future__ import annotations

import torch
from torch import nn


class DualCodebookEmbedding(nn.Module):
    """Embeds (B, T, 2) frame pairs into (B, T, input_size).

    The vq02 stream (0..1023, PAD 1024) and the shifted vq06 stream
    (1025..5120) index the same table of ``input_size // 2`` wide rows; the two
    halves are concatenated, vq02 first. State-dict key: ``embedding.weight``.
    """

    def __init__(self, vocab_size: int, input_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, input_size // 2)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        table = self.embedding
        return torch.cat([table(pairs[..., 0]), table(pairs[..., 1])], dim=-1)
