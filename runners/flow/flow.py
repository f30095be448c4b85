"""CausalMaskedDiffWithXvec: 25 Hz frame pairs + prompt + speaker → 50 Hz mel.

Pipeline of :meth:`inference` (non-streaming, batch of one):

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
        ref = self._param()
        device, dtype = ref.device, ref.dtype
        pairs = torch.cat([prompt_token, token], dim=1).to(device=device, dtype=torch.long).clamp_min(0)
        prompt_frames = prompt_feat.size(1)
        total_frames = pairs.size(1) * self.up_rate
        if prompt_frames > total_frames:
            raise ValueError(f"prompt mel has {prompt_frames} frames, more than the {total_frames} the tokens cover")

        spk = self.spk_embed_affine_layer(F.normalize(embedding.to(device=device, dtype=dtype), dim=1))
        h = self.encoder_proj(self.encoder(self.input_embedding(pairs)))  # (1, frames, 80)
        cond = torch.zeros_like(h)
        cond[:, :prompt_frames] = prompt_feat.to(device=device, dtype=dtype)

        if noise is None:
            noise = seeded_noise(seed, self.mel_channels, h.size(1))
        mel = self.decoder(
            mu=h.transpose(1, 2).contiguous(),
            mask=None,
            spks=spk,
            cond=cond.transpose(1, 2).contiguous(),
            noise=noise,
            n_timesteps=n_timesteps,
            temperature=temperature,
        )
        return mel[:, :, prompt_frames:]


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
