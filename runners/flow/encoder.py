"""UpsampleConformerEncoderV2: 25 Hz token embeddings → 50 Hz hidden states.

Layout (parameter names follow the official checkpoint):

    embed         Linear + LayerNorm, then × sqrt(d) and relative positions
    pre_lookahead_layer   conv looking ``pre_lookahead_len`` frames ahead, residual
    encoders[i]   pre-norm conformer blocks (rel-pos self-attention + FFN; no conv module)
    up_layer      nearest ×stride repeat, then a left-padded conv (causal in time)
    up_embed      a second Linear + LayerNorm + positions at the mel rate
    up_encoders[i]
    after_norm

Only the whole-utterance path is implemented; the streaming caches of the
upstream code are not needed by the non-streaming decoder. A right-padded batch
with per-row lengths is supported (the decoder worker batches requests).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from runners.decoder_config import EncoderConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {"swish": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def relative_position_table(length: int, d_model: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, 2L-1, d) sinusoids for relative offsets L-1, L-2, …, -(L-1) (ESPnet order).

    Even channels hold sin(offset·f), odd channels cos(offset·f), with the
    usual 10000^(-2i/d) frequencies; computed in float32 like the reference.
    """
    offsets = torch.arange(length - 1, -length, -1, dtype=torch.float32).unsqueeze(1)
    freqs = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    angles = offsets * freqs
    table = torch.zeros(2 * length - 1, d_model, dtype=torch.float32)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.unsqueeze(0).to(device=device, dtype=dtype)


class LinearInput(nn.Module):
    """Linear + LayerNorm input projection; scales by sqrt(d) and returns the position table too.

    Parameters live under ``out.0`` (Linear) and ``out.1`` (LayerNorm) as in the checkpoint.
    """

    def __init__(self, idim: int, odim: int) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5))
        self.d_model = odim
        self.xscale = math.sqrt(odim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.out(x) * self.xscale
        pos = relative_position_table(x.size(1), self.d_model, x.device, x.dtype)
        return x, pos


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions (pos_bias_u / pos_bias_v)."""

    def __init__(self, n_head: int, n_feat: int, key_bias: bool = True) -> None:
        super().__init__()
        self.h = n_head
        self.d_k = n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat, bias=key_bias)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_head, self.d_k))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.h, self.d_k)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C); pos (1, 2T-1, C); key_mask (B, 1, T) with True = real frame."""
        b, t, _ = x.shape
        q = self._split(self.linear_q(x))  # (B, T, H, D)
        k = self._split(self.linear_k(x)).transpose(1, 2)
        v = self._split(self.linear_v(x)).transpose(1, 2)
        p = self.linear_pos(pos).view(pos.size(0), -1, self.h, self.d_k).transpose(1, 2)  # (1, H, 2T-1, D)

        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))  # (B, H, T, T)
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))  # (B, H, T, 2T-1)
        # query i and key j are (i - j) apart; that offset sits at column (T-1) - (i - j) of the table
        rows = torch.arange(t, device=x.device).unsqueeze(1)
        cols = torch.arange(t, device=x.device).unsqueeze(0)
        index = (t - 1 - rows + cols).expand(b, self.h, t, t)
        position = torch.gather(position, -1, index)

        scores = (content + position) / math.sqrt(self.d_k)
        if key_mask is not None:
            blocked = ~key_mask.unsqueeze(1).bool()  # (B, 1, 1, T)
            weights = torch.softmax(scores.masked_fill(blocked, float("-inf")), dim=-1).masked_fill(blocked, 0.0)
        else:
            weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out)


class FeedForward(nn.Module):
    """Position-wise FFN; parameters ``w_1`` / ``w_2``."""

    def __init__(self, idim: int, hidden: int, activation: str = "swish") -> None:
        super().__init__()
        self.w_1 = nn.Linear(idim, hidden)
        self.activation = _ACTIVATIONS[activation]()
        self.w_2 = nn.Linear(hidden, idim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.activation(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Self-attention + FFN block (the official config has neither macaron FFN nor conv module)."""

    def __init__(self, size: int, heads: int, linear_units: int, key_bias: bool, normalize_before: bool, activation: str) -> None:
        super().__init__()
        self.self_attn = RelPositionAttention(heads, size, key_bias)
        self.feed_forward = FeedForward(size, linear_units, activation)
        self.norm_ff = nn.LayerNorm(size, eps=1e-12)
        self.norm_mha = nn.LayerNorm(size, eps=1e-12)
        self.normalize_before = normalize_before

    def forward(self, x: torch.Tensor, pos: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        if self.normalize_before:
            x = x + self.self_attn(self.norm_mha(x), pos, key_mask)
            return x + self.feed_forward(self.norm_ff(x))
        x = self.norm_mha(x + self.self_attn(x, pos, key_mask))
        return self.norm_ff(x + self.feed_forward(x))


class PreLookaheadLayer(nn.Module):
    """Lets each frame see ``pre_lookahead_len`` future frames, then a causal kernel-3 conv; residual."""

    def __init__(self, channels: int, pre_lookahead_len: int) -> None:
        super().__init__()
        self.pre_lookahead_len = pre_lookahead_len
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=pre_lookahead_len + 1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C) → (B, T, C); mask (B, 1, T) True for real frames.

        The first conv looks ahead, so in a padded batch a row's last frames would read its batch-mates'
        padding: padded frames are zeroed first, which is exactly the zero padding the row gets alone.
        """
        if mask is not None:
            x = x * mask.transpose(1, 2).to(x.dtype)
        y = F.pad(x.transpose(1, 2), (0, self.pre_lookahead_len))
        y = F.leaky_relu(self.conv1(y))
        y = self.conv2(F.pad(y, (2, 0)))
        return y.transpose(1, 2) + x


class Upsample1D(nn.Module):
    """Nearest-neighbour ×stride repeat followed by a left-padded (causal) conv of width 2·stride+1."""

    def __init__(self, channels: int, out_channels: int, stride: int, scale_factor: float) -> None:
        super().__init__()
        self.stride = stride
        self.scale_factor = float(scale_factor)
        self.conv = nn.Conv1d(channels, out_channels, stride * 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, T) → (B, C', T·scale)."""
        y = F.interpolate(x, scale_factor=self.scale_factor, mode="nearest")
        return self.conv(F.pad(y, (self.stride * 2, 0)))


def _length_mask(lengths: torch.Tensor | None, batch: int, steps: int, device: torch.device) -> torch.Tensor | None:
    """(B, 1, T) True for real frames, or None when every frame is real."""
    if lengths is None:
        return None
    mask = torch.arange(steps, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)
    if bool(mask.all()):
        return None
    return mask.view(batch, 1, steps)


class UpsampleConformerEncoderV2(nn.Module):
    """Token-rate conformer → ×up_stride → mel-rate conformer (see the module docstring)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d = cfg.output_size
        self.cfg = cfg
        self.embed = LinearInput(cfg.input_size, d)
        self.pre_lookahead_layer = PreLookaheadLayer(d, cfg.pre_lookahead_len)

        def stack(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                ConformerLayer(d, cfg.attention_heads, cfg.linear_units, cfg.key_bias, cfg.normalize_before, cfg.activation_type)
                for _ in range(n)
            )

        self.encoders = stack(cfg.num_blocks)
        self.up_layer = Upsample1D(d, d, cfg.up_stride, cfg.up_scale_factor)
        self.up_embed = LinearInput(cfg.input_size, d)
        self.up_encoders = stack(cfg.num_up_blocks)
        self.after_norm = nn.LayerNorm(d, eps=1e-5)

    def output_size(self) -> int:
        return self.cfg.output_size

    def forward(self, xs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """xs (B, T, input_size) → (B, T·up_stride, output_size).

        ``lengths`` (B,): real frames per row of a right-padded batch. Attention never reads a padded
        key, the look-ahead conv sees zeros past a row's end (as alone), and every other conv is causal,
        so a row's real frames do not depend on its padding or its batch-mates.
        """
        b, t, _ = xs.shape
        key_mask = _length_mask(lengths, b, t, xs.device)
        x, pos = self.embed(xs)
        x = self.pre_lookahead_layer(x, key_mask)
        for layer in self.encoders:
            x = layer(x, pos, key_mask)
        x = self.up_layer(x.transpose(1, 2)).transpose(1, 2)
        up_lengths = None if lengths is None else lengths * self.cfg.up_stride
        key_mask = _length_mask(up_lengths, b, x.size(1), xs.device)
        x, pos = self.up_embed(x)
        for layer in self.up_encoders:
            x = layer(x, pos, key_mask)
        if self.cfg.normalize_before:
            x = self.after_norm(x)
        return x
