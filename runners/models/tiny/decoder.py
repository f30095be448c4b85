"""Tiny random ``CosyVoice-300M-25Hz/`` folder: cosyvoice.yaml, flow.pt, hift.pt, campplus.onnx, FLOW_VERSION.

The yaml is written in the official hyperpyyaml form (same tags, class paths
and keys as the release, see :func:`render_decoder_yaml`) with small numbers;
the weights are random but a pure function of the seed, so numbers recorded on
them (tests/data/parity) stay valid.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from runners.models.decoder.config import CONFIG_FILE, FlowConfig, parse_decoder_config

# Upstream class paths, as the official yaml names them (read as data, never imported).
FLOW_TAG = "stepvocoder.cosyvoice2.flow.flow.CausalMaskedDiffWithXvec"
EMBEDDING_TAG = "stepvocoder.cosyvoice2.embedding.dual_codebook.DualCodebookEmbedding"
ENCODER_TAG = "stepvocoder.cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2"
CFM_TAG = "stepvocoder.cosyvoice2.flow.flow_matching.CausalConditionalCFM"
DIT_TAG = "stepvocoder.cosyvoice2.flow.decoder_dit.DiT"
HIFT_TAG = "stepvocoder.cosyvoice2.hifigan.generator.HiFTGenerator"
F0_TAG = "stepvocoder.cosyvoice2.hifigan.f0_predictor.ConvRNNF0Predictor"

MEL_CONF: dict[str, Any] = {
    "num_mels": 80,
    "n_fft": 1920,
    "hop_size": 480,
    "win_size": 1920,
    "sampling_rate": 24000,
    "fmin": 0,
    "fmax": 8000,
}

# The release's flow numbers (see tests/runners/models/test_decoder_config.py for which are confirmed and which inferred).
OFFICIAL_FLOW: dict[str, Any] = {
    "input_size": 512,
    "output_size": 80,
    "spk_embed_dim": 192,
    "output_type": "mel",
    "vocab_size": 5121,
    "input_embedding": {"vocab_size": 5121, "input_size": 512},
    "encoder": {
        "input_size": 512,
        "output_size": 512,
        "input_layer": "linear",
        "pre_lookahead_len": 3,
        "num_blocks": 6,
        "num_up_blocks": 4,
        "up_stride": 2,
        "up_scale_factor": 2,
        "attention_heads": 8,
        "pos_enc_layer_type": "rel_pos_espnet",
        "selfattention_layer_type": "rel_selfattn",
        "key_bias": True,
        "linear_units": 2048,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "attention_dropout_rate": 0.1,
        "normalize_before": True,
    },
    "decoder": {
        "inference_cfg_rate": 0.7,
        "estimator": {
            "in_channels": 320,
            "out_channels": 80,
            "mlp_ratio": 4.0,
            "depth": 16,
            "num_heads": 8,
            "head_dim": 64,
            "hidden_size": 512,
        },
    },
}

# Same structure, small numbers: the vocabulary stays 5121 so real token ids work.
TINY_FLOW: dict[str, Any] = {
    **OFFICIAL_FLOW,
    "input_size": 32,
    "input_embedding": {"vocab_size": 5121, "input_size": 32},
    "encoder": {
        **OFFICIAL_FLOW["encoder"],
        "input_size": 32,
        "output_size": 32,
        "num_blocks": 1,
        "num_up_blocks": 1,
        "attention_heads": 2,
        "linear_units": 64,
    },
    "decoder": {
        "inference_cfg_rate": 0.7,
        "estimator": {
            "in_channels": 320,
            "out_channels": 80,
            "mlp_ratio": 2.0,
            "depth": 2,
            "num_heads": 2,
            "head_dim": 16,
            "hidden_size": 32,
        },
    },
}

_TAGS = {
    ("flow",): FLOW_TAG,
    ("flow", "input_embedding"): EMBEDDING_TAG,
    ("flow", "encoder"): ENCODER_TAG,
    ("flow", "decoder"): CFM_TAG,
    ("flow", "decoder", "estimator"): DIT_TAG,
    ("hift",): HIFT_TAG,
    ("hift", "f0_predictor"): F0_TAG,
}
_COMMENTS = {
    ("flow", "vocab_size"): "1024(vq02) + 4096(vq06) + 1(vq02 pad)",
    ("flow", "input_embedding", "vocab_size"): "1024(vq02) + 4096(vq06) + 1(vq02 pad)",
}


def _render(mapping: dict[str, Any], path: tuple[str, ...], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for key, value in mapping.items():
        here = path + (key,)
        if isinstance(value, dict):
            tag = _TAGS.get(here)
            lines.append(f"{pad}{key}:" + (f" !new:{tag}" if tag else ""))
            _render(value, here, indent + 4, lines)
        else:
            comment = _COMMENTS.get(here)
            lines.append(f"{pad}{key}: {json.dumps(value)}" + (f"  # {comment}" if comment else ""))


def render_decoder_yaml(flow: dict[str, Any], hift: dict[str, Any], mel_conf: dict[str, Any] | None = None) -> str:
    """cosyvoice.yaml text in the official hyperpyyaml form for these numbers."""
    lines: list[str] = []
    _render({"mel_conf": mel_conf or MEL_CONF}, (), 0, lines)
    lines.append("")
    _render({"flow": flow}, (), 0, lines)
    lines.append("")
    _render({"hift": hift}, (), 0, lines)
    return "\n".join(lines) + "\n"


def _fill_tensor(key: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """Random values that keep a randomly weighted flow finite and input-dependent."""
    normal = torch.randn(shape, generator=gen)
    if len(shape) >= 2:
        if key.endswith("embedding.weight"):
            return normal
        return normal / math.sqrt(math.prod(shape[1:]))
    is_norm = ".norm" in key or key.endswith(("after_norm.weight", "out.1.weight", "block.3.weight"))
    if key.endswith("weight") and is_norm:
        return 1.0 + 0.1 * normal
    return 0.1 * normal  # biases and positional biases


def tiny_flow_state(cfg: FlowConfig, seed: int) -> dict[str, torch.Tensor]:
    """A seeded state dict with every official key for ``cfg`` (sorted-key order fixes the draws)."""
    from runners.models.decoder.flow import CausalMaskedDiffWithXvec

    with torch.random.fork_rng(devices=[]):  # building the module must not disturb the caller's RNG
        model = CausalMaskedDiffWithXvec(cfg)
    gen = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    return {k: _fill_tensor(k, shapes[k], gen).contiguous() for k in sorted(shapes)}


def write_flow(path: Path, cfg: FlowConfig, seed: int) -> bytes:
    """Write a random ``flow.pt`` (plain state dict) and return its bytes."""
    buf = io.BytesIO()
    torch.save(tiny_flow_state(cfg, seed), buf)
    data = buf.getvalue()
    Path(path).write_bytes(data)
    return data


def write_decoder_part(decoder_dir: Path, seed: int = 0, official_size: bool = False) -> None:
    """Write the whole tiny decoder folder (yaml, flow.pt, hift.pt, campplus.onnx, FLOW_VERSION).

    ``official_size``: the flow and the vocoder at the release's dimensions (the speaker model stays
    tiny: it runs once per prompt audio).
    """
    from runners.models.tiny.vocoder import official_hift_section, tiny_hift_section, write_campplus, write_hift

    decoder_dir = Path(decoder_dir)
    decoder_dir.mkdir(parents=True, exist_ok=True)
    hift = official_hift_section() if official_size else tiny_hift_section()
    text = render_decoder_yaml(OFFICIAL_FLOW if official_size else TINY_FLOW, hift)
    cfg = parse_decoder_config(text)  # the writer proves its own yaml reads back
    (decoder_dir / CONFIG_FILE).write_text(text, encoding="utf-8")
    flow_bytes = write_flow(decoder_dir / "flow.pt", cfg.flow, seed)
    write_hift(decoder_dir / "hift.pt", cfg.hift, seed + 1)
    write_campplus(decoder_dir / "campplus.onnx", seed + 2)
    (decoder_dir / "FLOW_VERSION").write_text(hashlib.sha1(flow_bytes).hexdigest() + "\n", encoding="ascii")
