"""The DiT velocity estimator of the flow-matching decoder.

Input per frame: the current noisy mel x, the encoder's mel-rate features mu,
the projected speaker vector and the prompt-mel condition (4 × 80 = 320
channels), projected to ``hidden_size``. Each block is conditioned on the
timestep through adaLN-Zero with nine modulation vectors: shift/scale/gate for
the attention branch, for a causal convolution branch, and for the MLP
branch, applied in that order (attention, conv, MLP). Attention is
bidirectional over the whole utterance in the non-streaming path.

Parameter names follow the official checkpoint (``t_embedder.mlp.0``,
``blocks.N.adaLN_modulation.1``, ``blocks.N.conv.block.1`` …).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from runners.models.decoder.config import DiTConfig


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Flow time t ∈ [0, 1] → hidden vector, through 256 sinusoids of t·1000 and a 2-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    @staticmethod
    def sinusoids(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """(N,) → (N, dim): cosines then sines of t at geometrically spaced frequencies."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t)
        angles = t[:, None] * freqs[None]
        emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoids(t * 1000, self.frequency_embedding_size))


class Attention(nn.Module):
    """Multi-head attention with per-head LayerNorm on queries and keys."""

    def __init__(self, dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner = num_heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.q_norm = nn.LayerNorm(head_dim)
        self.k_norm = nn.LayerNorm(head_dim)
        self.proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, C); key_mask (B, 1, T) bool, True = attend (None = attend everywhere)."""
        b, t, _ = x.shape
        q = self.q_norm(self._heads(self.to_q(x)))
        k = self.k_norm(self._heads(self.to_k(x)))
        v = self._heads(self.to_v(x))
        mask = None if key_mask is None else key_mask.bool().unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class _Slot(nn.Module):
    """A parameter-free placeholder that keeps the checkpoint's Sequential indices (block.1/3/6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never called
        return x


class CausalConvBlock(nn.Module):
    """conv(k) → LayerNorm → Mish → conv(k), both convs left-padded so no frame sees the future.

    ``block`` mirrors the checkpoint layout: index 1 = first conv, 3 = norm, 6 = second conv.
    """

    def __init__(self, channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.block = nn.ModuleList(
            [
                _Slot(),
                nn.Conv1d(channels, out_channels, kernel_size),
                _Slot(),
                nn.LayerNorm(out_channels),
                nn.Mish(),
                _Slot(),
                nn.Conv1d(out_channels, out_channels, kernel_size),
            ]
        )

    def _causal(self, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) → (B, T, C') through a conv that only looks back."""
        return conv(F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._causal(self.block[1], x)
        y = self.block[4](self.block[3](y))
        return self._causal(self.block[6], y)


class MLP(nn.Module):
    """fc1 → tanh-approximated GELU → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """adaLN-Zero block: attention, causal conv and MLP branches, each gated by the timestep."""

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(hidden_size, int(hidden_size * mlp_ratio))
        self.norm3 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.conv = CausalConvBlock(hidden_size, hidden_size, kernel_size=3)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 9 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, C); c (B, 1, C) timestep vector."""
        (
            shift_attn, scale_attn, gate_attn,
            shift_mlp, scale_mlp, gate_mlp,
            shift_conv, scale_conv, gate_conv,
        ) = self.adaLN_modulation(c).chunk(9, dim=-1)  # fmt: skip
        x = x + gate_attn * self.attn(modulate(self.norm1(x), shift_attn, scale_attn), key_mask)
        x = x + gate_conv * self.conv(modulate(self.norm3(x), shift_conv, scale_conv))
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """Timestep-modulated LayerNorm and a projection to the mel channels."""

    def __init__(self, hidden_size: int, out_channels: int) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Velocity field v(x, t | mu, speaker, prompt) over (B, 80, T) mel tensors."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_channels = cfg.in_channels
        self.out_channels = cfg.out_channels
        self.t_embedder = TimestepEmbedder(cfg.hidden_size)
        self.in_proj = nn.Linear(cfg.in_channels, cfg.hidden_size)
        self.blocks = nn.ModuleList(
            DiTBlock(cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.final_layer = FinalLayer(cfg.hidden_size, cfg.out_channels)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        mu: torch.Tensor,
        t: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor:
        """x, mu, cond (B, 80, T); mask (B, 1, T) or None; t (B,); spks (B, 80) → (B, 80, T)."""
        c = self.t_embedder(t).unsqueeze(1)
        speaker = spks.unsqueeze(-1).expand(-1, -1, x.size(-1))
        h = self.in_proj(torch.cat([x, mu, speaker, cond], dim=1).transpose(1, 2))
        key_mask = None if mask is None or bool(mask.all()) else mask
        for block in self.blocks:
            h = block(h, c, key_mask)
        return self.final_layer(h, c).transpose(1, 2)
