"""Tiny random stand-ins for ``hift.pt`` and ``campplus.onnx``.

Both keep the official interfaces (HiFT key names, 24 kHz at 480 samples per
mel frame; CAM++ input (B, T, 80) fbank → (B, 192)) with few parameters, and
both are byte-for-byte reproducible from a seed, so numbers recorded on them
(tests/data/parity) stay valid.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from runners.models.decoder.hift import expected_hift_state_shapes

CAMPPLUS_INPUT = "input"  # the official file's input is read by position; this is the name we give ours
CAMPPLUS_OUTPUT = "output"
SPEAKER_DIM = 192
FBANK_BINS = 80


def tiny_hift_section() -> dict[str, Any]:
    """Small HiFT numbers with the official key names; still 24 kHz, 8·5·3·4 = 480 samples per frame."""
    return {
        "in_channels": 80,
        "base_channels": 16,
        "nb_harmonics": 8,
        "sampling_rate": 24000,
        "nsf_alpha": 0.1,
        "nsf_sigma": 0.003,
        "nsf_voiced_threshold": 10,
        "upsample_rates": [8, 5, 3],
        "upsample_kernel_sizes": [16, 11, 7],
        "istft_params": {"n_fft": 16, "hop_len": 4},
        "resblock_kernel_sizes": [3, 5],
        "resblock_dilation_sizes": [[1, 3], [1, 3]],
        "source_resblock_kernel_sizes": [5, 5, 3],
        "source_resblock_dilation_sizes": [[1, 3], [1, 3], [1, 3]],
        "lrelu_slope": 0.1,
        "audio_limit": 0.99,
        "f0_predictor": {"num_class": 1, "in_channels": 80, "cond_channels": 16},
    }


def official_hift_section() -> dict[str, Any]:
    """The HiFT numbers of the 24 kHz CosyVoice vocoder (as fast as the real one, for speed measurements)."""
    return {
        **tiny_hift_section(),
        "base_channels": 512,
        "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "source_resblock_kernel_sizes": [7, 7, 11],
        "source_resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "f0_predictor": {"num_class": 1, "in_channels": 80, "cond_channels": 512},
    }


def _hift_tensor(key: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """One checkpoint tensor, scaled so the tiny vocoder is audible but rarely clips.

    The F0 head is biased to ~60 Hz with a wide spread, so some frames fall
    under the 10 Hz voicing threshold and both source branches are exercised.
    """
    normal = torch.randn(shape, generator=gen)
    if key.endswith("original1"):  # weight-norm direction
        return normal
    if key.endswith("original0"):  # weight-norm magnitude (row norm of the effective weight)
        gain = 0.3 if key.startswith("conv_post") else 1.0
        return gain * (0.5 + 0.5 * torch.rand(shape, generator=gen))
    if key.endswith("alpha"):
        return 0.5 + torch.rand(shape, generator=gen)
    if key == "f0_predictor.classifier.weight":
        return normal * (250.0 / math.sqrt(shape[1]))
    if key == "f0_predictor.classifier.bias":
        return torch.full(shape, 60.0)
    if key.endswith("weight"):
        fan_in = math.prod(shape[1:])
        return normal / math.sqrt(fan_in)
    return 0.05 * normal  # biases


def tiny_hift_state(section: dict[str, Any], seed: int) -> dict[str, Tensor]:
    """Seeded tensors for every official key of this section (sorted-key order fixes the draws)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = expected_hift_state_shapes(section)
    return {k: _hift_tensor(k, shapes[k], gen).contiguous() for k in sorted(shapes)}


def write_hift(path: Path, section: dict[str, Any], seed: int) -> None:
    """Write a random ``hift.pt`` (plain state dict, official key names) for ``section``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(tiny_hift_state(section, seed), buf)
    path.write_bytes(buf.getvalue())


class TinySpeakerNet(nn.Module):
    """fbank (B, T, 80) → (B, 192): per-frame projection, mean and spread over time, projection."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.frame = nn.Linear(FBANK_BINS, hidden)
        self.embed = nn.Linear(2 * hidden, SPEAKER_DIM)

    def forward(self, feats: Tensor) -> Tensor:
        h = torch.relu(self.frame(feats))
        mean = h.mean(dim=1)
        spread = torch.sqrt((h - mean.unsqueeze(1)).pow(2).mean(dim=1) + 1e-5)
        return self.embed(torch.cat([mean, spread], dim=-1))


def write_campplus(path: Path, seed: int) -> None:
    """Export a seeded :class:`TinySpeakerNet` to ONNX with dynamic batch and time axes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = TinySpeakerNet()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(net.named_parameters()):
            scale = 0.1 if name.endswith("bias") else 1.0 / math.sqrt(param.shape[-1])
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
    net.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but gives a plain single-file graph
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(net, buf)
    path.write_bytes(buf.getvalue())


def _export(net: nn.Module, buf: io.BytesIO) -> None:
    torch.onnx.export(
        net,
        (torch.zeros(1, 50, FBANK_BINS),),
        buf,
        input_names=[CAMPPLUS_INPUT],
        output_names=[CAMPPLUS_OUTPUT],
        dynamic_axes={CAMPPLUS_INPUT: {0: "batch", 1: "frames"}, CAMPPLUS_OUTPUT: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
