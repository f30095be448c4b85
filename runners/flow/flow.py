"""CausalMaskedDiffWithXvec: 25 Hz frame pairs + prompt + speaker → 50 Hz mel.

Pipeline of :meth:`inference` (one request) and :meth:`inference_rows` (a padded batch):

1. prompt pairs are put in front of the generated pairs and embedded
   (:class:`DualCodebookEmbedding`, 2 × 256 → 512);
2. the conformer encoder upsamples to the mel rate; ``encoder_proj`` maps to 80;
3. the 192-d speaker vector is L2-normalised and projected to 80
   (``spk_embed_affine_layer``);
4. the prompt mel fills the first frames of the condition, zeros elsewhere;
5. the CFM sampler produces mel for the whole sequence; only the frames after
   the prompt are returned.

The module tree and parameter names equal the official ``flow.pt`` so that
file loads with ``strict=True``. The decoder's noise buffers are not
parameters in the official file either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from runners.decoder_config import FlowConfig
from runners.flow.cfm import CausalConditionalCFM, seeded_noise
from runners.flow.dit import DiT
from runners.flow.embedding import DualCodebookEmbedding
from runners.flow.encoder import UpsampleConformerEncoderV2


class CausalMaskedDiffWithXvec(nn.Module):
    """The flow decoder; build with a :class:`FlowConfig`, then ``load_state_dict(flow.pt)``."""

    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_embedding = DualCodebookEmbedding(cfg.embedding_vocab_size, cfg.embedding_input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = UpsampleConformerEncoderV2(cfg.encoder)
        self.encoder_proj = nn.Linear(cfg.encoder.output_size, cfg.output_size)
        self.decoder = CausalConditionalCFM(DiT(cfg.estimator), cfg.inference_cfg_rate)

    @property
    def up_rate(self) -> int:
        return self.cfg.encoder.up_stride

    @property
    def mel_channels(self) -> int:
        return self.cfg.output_size

    def _param(self) -> torch.Tensor:
        return self.spk_embed_affine_layer.weight

    @torch.inference_mode()
    def inference(
        self,
        token: torch.Tensor,
        prompt_token: torch.Tensor,
        prompt_feat: torch.Tensor,
        embedding: torch.Tensor,
        n_timesteps: int = 10,
        seed: int = 0,
        noise: torch.Tensor | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Generate mel for ``token``.

        token (1, T, 2) and prompt_token (1, P, 2) long frame pairs; prompt_feat
        (1, up_rate·P, 80) prompt mel; embedding (1, spk_embed_dim) speaker vector.
        ``noise`` (1, 80, ≥ up_rate·(P+T)) overrides the seeded noise (parity tests).
        Returns (1, 80, up_rate·T) in the module's dtype.
        """
        if token.dim() != 3 or token.size(0) != 1 or token.size(-1) != 2:
            raise ValueError(f"token must be (1, T, 2) frame pairs, got {tuple(token.shape)}")
        if prompt_token.dim() != 3 or prompt_token.size(-1) != 2:
            raise ValueError(f"prompt_token must be (1, P, 2) frame pairs, got {tuple(prompt_token.shape)}")
        if noise is None:
            noise = seeded_noise(seed, self.mel_channels, (prompt_token.size(1) + token.size(1)) * self.up_rate)
        row = FlowRow(token[0], prompt_token[0], prompt_feat[0], embedding.reshape(-1), noise[0])
        return self.inference_rows([row], n_timesteps, temperature)[0].unsqueeze(0)

    @torch.inference_mode()
    def inference_rows(self, rows: Sequence[FlowRow], n_timesteps: int = 10, temperature: float = 1.0) -> list[torch.Tensor]:
        """Mel (80, up_rate·T_i) for each row, all rows in one right-padded batch.

        Why a batch: the decoder worker runs many requests' flows as one call (the CFG rows of every
        request in one estimator call per Euler step). Why it gives each row the numbers it gets alone:
        rows are padded at the right end only, attention keys past a row's end are masked, the one
        look-ahead conv sees zeros there (as alone), every other conv is causal, and each row keeps its
        own noise, speaker and prompt. A batch of one is not padded at all: the single-request path.
        """
        if not rows:
            return []
        ref = self._param()
        device, dtype = ref.device, ref.dtype
        up = self.up_rate
        lengths = [row.prompt_token.size(0) + row.token.size(0) for row in rows]
        longest = max(lengths)
        for row, n in zip(rows, lengths):
            if row.token.dim() != 2 or row.token.size(-1) != 2 or row.prompt_token.dim() != 2:
                raise ValueError(f"a row's token must be (T, 2) frame pairs, got {tuple(row.token.shape)}")
            if row.prompt_feat.size(0) > n * up:
                raise ValueError(f"prompt mel has {row.prompt_feat.size(0)} frames, more than the {n * up} the tokens cover")
            if row.noise.size(-1) < n * up:
                raise ValueError(f"noise covers {row.noise.size(-1)} frames, {n * up} needed")

        padded = any(n != longest for n in lengths)
        batch = len(rows)
        pairs = torch.zeros((batch, longest, 2), dtype=torch.long, device=device)
        for i, row in enumerate(rows):
            pairs[i, : lengths[i]] = torch.cat([row.prompt_token, row.token], dim=0).to(device=device, dtype=torch.long)
        pairs = pairs.clamp_min(0)
        embedding = torch.stack([row.embedding.reshape(-1) for row in rows]).to(device=device, dtype=dtype)
        spk = self.spk_embed_affine_layer(F.normalize(embedding, dim=1))
        token_lengths = torch.tensor(lengths, device=device) if padded else None
        h = self.encoder_proj(self.encoder(self.input_embedding(pairs), token_lengths))  # (B, frames, 80)
        frames = h.size(1)
        cond = torch.zeros_like(h)
        for i, row in enumerate(rows):
            cond[i, : row.prompt_feat.size(0)] = row.prompt_feat.to(device=device, dtype=dtype)

        mask = None
        if padded:
            mask = (torch.arange(frames, device=device).unsqueeze(0) < (token_lengths * up).unsqueeze(1)).unsqueeze(1)
            h = h * mask.transpose(1, 2).to(dtype)  # padding is zeros, not another row's garbage
            noise = torch.zeros((batch, self.mel_channels, frames), dtype=torch.float32)
            for i, row in enumerate(rows):
                noise[i, :, : lengths[i] * up] = row.noise[:, : lengths[i] * up]
        else:
            noise = torch.stack([row.noise[:, :frames] for row in rows])
        mel = self.decoder(
            mu=h.transpose(1, 2).contiguous(),
            mask=mask,
            spks=spk,
            cond=cond.transpose(1, 2).contiguous(),
            noise=noise,
            n_timesteps=n_timesteps,
            temperature=temperature,
        )
        return [mel[i, :, row.prompt_feat.size(0) : lengths[i] * up] for i, row in enumerate(rows)]


@dataclass(frozen=True)
class FlowRow:
    """One request's flow input for :meth:`CausalMaskedDiffWithXvec.inference_rows`.

    token (T, 2) and prompt_token (P, 2) frame pairs; prompt_feat (≤ up_rate·P, 80) prompt mel;
    embedding (spk_embed_dim,) speaker vector; noise (80, ≥ up_rate·(P+T)) the request's own noise.
    """

    token: torch.Tensor
    prompt_token: torch.Tensor
    prompt_feat: torch.Tensor
    embedding: torch.Tensor
    noise: torch.Tensor

    @property
    def frames(self) -> int:
        """Token frames the flow runs over (prompt + generated): the row's cost and padded length."""
        return self.prompt_token.size(0) + self.token.size(0)


def expected_flow_state_shapes(cfg: FlowConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter name of ``flow.pt`` and its shape, derived from the architecture alone.

    Written independently of the modules above so that a test comparing the two
    catches a drift in either.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    emb = cfg.embedding_input_size
    shapes["input_embedding.embedding.weight"] = (cfg.embedding_vocab_size, emb // 2)
    shapes["spk_embed_affine_layer.weight"] = (cfg.output_size, cfg.spk_embed_dim)
    shapes["spk_embed_affine_layer.bias"] = (cfg.output_size,)

    enc = cfg.encoder
    d = enc.output_size

    def linear(name: str, out_f: int, in_f: int, bias: bool = True) -> None:
        shapes[f"{name}.weight"] = (out_f, in_f)
        if bias:
            shapes[f"{name}.bias"] = (out_f,)

    def norm(name: str, width: int) -> None:
        shapes[f"{name}.weight"] = (width,)
        shapes[f"{name}.bias"] = (width,)

    def conv(name: str, out_c: int, in_c: int, k: int) -> None:
        shapes[f"{name}.weight"] = (out_c, in_c, k)
        shapes[f"{name}.bias"] = (out_c,)

    for stem in ("encoder.embed", "encoder.up_embed"):
        linear(f"{stem}.out.0", d, enc.input_size)
        norm(f"{stem}.out.1", d)
    conv("encoder.pre_lookahead_layer.conv1", d, d, enc.pre_lookahead_len + 1)
    conv("encoder.pre_lookahead_layer.conv2", d, d, 3)
    conv("encoder.up_layer.conv", d, d, 2 * enc.up_stride + 1)
    norm("encoder.after_norm", d)
    layers = [f"encoder.encoders.{i}" for i in range(enc.num_blocks)]
    layers += [f"encoder.up_encoders.{i}" for i in range(enc.num_up_blocks)]
    d_k = d // enc.attention_heads
    for layer in layers:
        a = f"{layer}.self_attn"
        linear(f"{a}.linear_q", d, d)
        linear(f"{a}.linear_k", d, d, bias=enc.key_bias)
        linear(f"{a}.linear_v", d, d)
        linear(f"{a}.linear_out", d, d)
        linear(f"{a}.linear_pos", d, d, bias=False)
        shapes[f"{a}.pos_bias_u"] = (enc.attention_heads, d_k)
        shapes[f"{a}.pos_bias_v"] = (enc.attention_heads, d_k)
        linear(f"{layer}.feed_forward.w_1", enc.linear_units, d)
        linear(f"{layer}.feed_forward.w_2", d, enc.linear_units)
        norm(f"{layer}.norm_ff", d)
        norm(f"{layer}.norm_mha", d)
    linear("encoder_proj", cfg.output_size, d)

    est = cfg.estimator
    hid = est.hidden_size
    inner = est.num_heads * est.head_dim
    e = "decoder.estimator"
    linear(f"{e}.t_embedder.mlp.0", hid, 256)
    linear(f"{e}.t_embedder.mlp.2", hid, hid)
    linear(f"{e}.in_proj", hid, est.in_channels)
    for i in range(est.depth):
        b = f"{e}.blocks.{i}"
        for name in ("to_q", "to_k", "to_v"):
            linear(f"{b}.attn.{name}", inner, hid)
        norm(f"{b}.attn.q_norm", est.head_dim)
        norm(f"{b}.attn.k_norm", est.head_dim)
        linear(f"{b}.attn.proj", hid, inner)
        linear(f"{b}.mlp.fc1", int(hid * est.mlp_ratio), hid)
        linear(f"{b}.mlp.fc2", hid, int(hid * est.mlp_ratio))
        conv(f"{b}.conv.block.1", hid, hid, 3)
        norm(f"{b}.conv.block.3", hid)
        conv(f"{b}.conv.block.6", hid, hid, 3)
        linear(f"{b}.adaLN_modulation.1", 9 * hid, hid)
    linear(f"{e}.final_layer.adaLN_modulation.1", 2 * hid, hid)
    linear(f"{e}.final_layer.linear", est.out_channels, hid)
    return shapes
