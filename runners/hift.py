"""HiFT vocoder: 80-bin mel at 50 frames/s → 24 kHz waveform.

The official ``hift.pt`` is a CosyVoice-style HiFTNet (neural source filter +
iSTFT head) trained by StepFun. This module re-implements it so that the file
loads unchanged: every parameter name below is chosen to equal a key of that
state dict, and the convolutions that the official model weight-normalises use
torch's parametrized weight norm, whose keys are
``<name>.parametrizations.weight.original0`` (magnitude g) and
``...original1`` (direction v). Checkpoints saved with the older
``weight_g`` / ``weight_v`` spelling load as well (torch converts them).

Signal path (numbers from the config section, official values in brackets):

1. ``f0_predictor``: five k=3 convolutions with ELU, a linear layer, ``abs``
   → one F0 value in Hz per mel frame.
2. ``m_source``: F0 held for each output sample; ``nb_harmonics + 1`` sines
   whose phase is integrated at frame rate and interpolated back (cheap and
   smooth), random start phases for the overtones, noise (strong where
   unvoiced, weak where voiced), merged by ``l_linear`` + tanh.
3. The source's STFT (n_fft [16], hop [4]) is fused into each upsampling
   stage through ``source_downs`` + ``source_resblocks``.
4. ``conv_pre`` → (LeakyReLU, transposed conv, fused source, mean of
   ``resblocks``) per stage → ``conv_post`` → log-magnitude and phase →
   iSTFT → clamp to ``audio_limit``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

_REQUIRED_KEYS = (
    "in_channels",
    "base_channels",
    "nb_harmonics",
    "sampling_rate",
    "upsample_rates",
    "upsample_kernel_sizes",
    "istft_params",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "source_resblock_kernel_sizes",
    "source_resblock_dilation_sizes",
    "f0_predictor",
)
# Keys the official constructor also accepts; their values there are these defaults.
_OPTIONAL_DEFAULTS: dict[str, float] = {
    "nsf_alpha": 0.1,
    "nsf_sigma": 0.003,
    "nsf_voiced_threshold": 10.0,
    "lrelu_slope": 0.1,
    "audio_limit": 0.99,
}
F0_PREDICTOR_LAYERS = 5  # the official predictor always has five convolutions
_SNAKE_EPS = 1e-9
_MAX_MAGNITUDE = 100.0  # the iSTFT head clips exp(log-magnitude) here


@dataclass(frozen=True)
class HiFTConfig:
    """The numbers of the ``hift:`` section of cosyvoice.yaml, typed."""

    in_channels: int
    base_channels: int
    nb_harmonics: int
    sampling_rate: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    n_fft: int
    hop_len: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    source_resblock_kernel_sizes: tuple[int, ...]
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    f0_num_class: int
    f0_in_channels: int
    f0_cond_channels: int
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "HiFTConfig":
        """Parse a section dict with the official key names; unknown or missing keys are errors."""
        missing = [k for k in _REQUIRED_KEYS if k not in section]
        unknown = [k for k in section if k not in _REQUIRED_KEYS and k not in _OPTIONAL_DEFAULTS]
        if missing or unknown:
            raise ValueError(f"hift section: missing keys {missing}, unknown keys {unknown}")
        istft = section["istft_params"]
        f0 = section["f0_predictor"]
        if not isinstance(istft, Mapping) or not isinstance(f0, Mapping):
            raise ValueError("hift section: istft_params and f0_predictor must be mappings")
        opt = {k: float(section.get(k, v)) for k, v in _OPTIONAL_DEFAULTS.items()}
        cfg = cls(
            in_channels=int(section["in_channels"]),
            base_channels=int(section["base_channels"]),
            nb_harmonics=int(section["nb_harmonics"]),
            sampling_rate=int(section["sampling_rate"]),
            upsample_rates=_ints(section["upsample_rates"]),
            upsample_kernel_sizes=_ints(section["upsample_kernel_sizes"]),
            n_fft=int(istft["n_fft"]),
            hop_len=int(istft["hop_len"]),
            resblock_kernel_sizes=_ints(section["resblock_kernel_sizes"]),
            resblock_dilation_sizes=tuple(_ints(d) for d in section["resblock_dilation_sizes"]),
            source_resblock_kernel_sizes=_ints(section["source_resblock_kernel_sizes"]),
            source_resblock_dilation_sizes=tuple(_ints(d) for d in section["source_resblock_dilation_sizes"]),
            f0_num_class=int(f0.get("num_class", 1)),
            f0_in_channels=int(f0.get("in_channels", section["in_channels"])),
            f0_cond_channels=int(f0["cond_channels"]),
            **opt,
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Reject numbers the architecture cannot be built from (clear error instead of a shape crash)."""
        n_up = len(self.upsample_rates)
        problems: list[str] = []
        if n_up == 0 or len(self.upsample_kernel_sizes) != n_up:
            problems.append("upsample_rates and upsample_kernel_sizes must be non-empty and equally long")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes) or not self.resblock_kernel_sizes:
            problems.append("resblock_kernel_sizes and resblock_dilation_sizes must match")
        if len(self.source_resblock_kernel_sizes) != n_up or len(self.source_resblock_dilation_sizes) != n_up:
            problems.append("one source resblock per upsampling stage is needed")
        if self.base_channels % (2**n_up):
            problems.append("base_channels must be divisible by 2**len(upsample_rates)")
        if self.n_fft % self.hop_len:
            problems.append("istft n_fft must be a multiple of hop_len")
        if self.f0_num_class != 1:
            problems.append("f0_predictor.num_class must be 1 (one F0 per frame)")
        if self.f0_in_channels != self.in_channels:
            problems.append("f0_predictor.in_channels must equal in_channels")
        if problems:
            raise ValueError("hift section: " + "; ".join(problems))

    @property
    def samples_per_frame(self) -> int:
        """Output samples per mel frame (480 for the official 24 kHz model)."""
        return math.prod(self.upsample_rates) * self.hop_len

    def stage_channels(self, stage: int) -> int:
        """Channels after upsampling stage ``stage`` (halved at every stage)."""
        return self.base_channels // (2 ** (stage + 1))

    def source_strides(self) -> list[int]:
        """Stride of ``source_downs[i]``: how much coarser stage i is than the source STFT."""
        rates = list(self.upsample_rates)
        strides = [math.prod(rates[i + 1 :]) for i in range(len(rates))]
        return strides


def _ints(values: Sequence[Any]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _same_padding(kernel: int, dilation: int) -> int:
    return (kernel * dilation - dilation) // 2


def _wn_conv(conv: nn.Module) -> nn.Module:
    """Weight-normalise like the official model (dim 0, parametrized: original0 = g, original1 = v)."""
    return weight_norm(conv)


class Snake(nn.Module):
    """x + sin²(αx)/α with one learned α per channel (key ``alpha``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        a = self.alpha[None, :, None]
        return x + (1.0 / (a + _SNAKE_EPS)) * torch.sin(x * a).pow(2)


class ResBlock(nn.Module):
    """Snake → dilated conv → Snake → conv, residual, once per dilation."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            _wn_conv(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_same_padding(kernel, d)))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            _wn_conv(nn.Conv1d(channels, channels, kernel, padding=_same_padding(kernel, 1))) for _ in dilations
        )
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, C, T); ``mask`` (B, 1, T) 1.0 on a row's real frames: each conv's output is cut there, so
        the next conv sees zeros past the row's end, the zero padding it would see alone."""
        for act1, conv1, act2, conv2 in zip(self.activations1, self.convs1, self.activations2, self.convs2):
            if mask is None:
                x = x + conv2(act2(conv1(act1(x))))
            else:
                x = x + conv2(act2(conv1(act1(x)) * mask)) * mask  # x is already zero past the end
        return x


class F0Predictor(nn.Module):
    """mel (B, C, T) → F0 in Hz (B, T). ``condnet`` keeps the official Sequential indices (convs at 0,2,4,6,8)."""

    def __init__(self, in_channels: int, cond_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(F0_PREDICTOR_LAYERS):
            cin = in_channels if i == 0 else cond_channels
            layers += [_wn_conv(nn.Conv1d(cin, cond_channels, 3, padding=1)), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, 1)

    def forward(self, mel: Tensor, mask: Tensor | None = None) -> Tensor:
        """``mask`` (B, 1, T) 1.0 on real frames of a right-padded batch: every conv then sees zeros past a
        row's end (ELU(0) = 0), exactly what it sees alone, so a row's F0 ignores its batch-mates."""
        if mask is None:
            h = self.condnet(mel)
        else:
            h = mel * mask
            for layer in self.condnet:
                h = layer(h)
                if isinstance(layer, nn.ELU):
                    h = h * mask
        return self.classifier(h.transpose(1, 2)).squeeze(-1).abs()


class HarmonicSource(nn.Module):
    """Per-sample F0 → one excitation channel (B, 1, L); only ``l_linear`` is learned."""

    def __init__(self, cfg: HiFTConfig) -> None:
        super().__init__()
        self.sampling_rate = cfg.sampling_rate
        self.samples_per_frame = cfg.samples_per_frame
        self.n_sines = cfg.nb_harmonics + 1
        self.alpha = cfg.nsf_alpha
        self.sigma = cfg.nsf_sigma
        self.threshold = cfg.nsf_voiced_threshold
        self.l_linear = nn.Linear(self.n_sines, 1)

    def forward(self, f0_frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """f0_frames (B, T) in Hz → excitation (B, 1, T·samples_per_frame).

        Two random draws, in this order and these shapes (time-major, as the
        official model draws them): start phases ``rand(B, H+1)`` (the
        fundamental's is forced to 0) and noise ``randn(B, L, H+1)``.
        """
        b, t = f0_frames.shape
        s = self.samples_per_frame
        length = t * s
        f0 = f0_frames.float().repeat_interleave(s, dim=1).unsqueeze(-1)  # (B, L, 1)
        multiples = torch.arange(1, self.n_sines + 1, device=f0.device, dtype=f0.dtype)
        step = torch.remainder(f0 * multiples / self.sampling_rate, 1.0)  # cycles per sample, (B, L, H+1)

        start = _draw(torch.rand, (b, self.n_sines), generator, f0.device)
        start[:, 0] = 0.0
        step[:, 0, :] = step[:, 0, :] + start

        # integrate at frame rate, then interpolate the phase back to sample rate
        coarse = F.interpolate(step.transpose(1, 2), size=t, mode="linear", align_corners=False)
        phase = torch.cumsum(coarse, dim=2) * (2.0 * math.pi) * s
        phase = F.interpolate(phase, size=length, mode="linear", align_corners=False).transpose(1, 2)
        sines = torch.sin(phase) * self.alpha

        voiced = (f0 > self.threshold).to(sines.dtype)
        noise_scale = voiced * self.sigma + (1.0 - voiced) * (self.alpha / 3.0)
        noise = noise_scale * _draw(torch.randn, tuple(sines.shape), generator, f0.device)
        excitation = (sines * voiced + noise).to(self.l_linear.weight.dtype)
        return torch.tanh(self.l_linear(excitation)).transpose(1, 2)


def _pad_rows(rows: Sequence[Tensor]) -> tuple[Tensor, Tensor | None]:
    """(C, T_i) rows → (B, C, max T) zero-padded at the right, and the lengths (None when all are equal)."""
    longest = max(r.size(-1) for r in rows)
    if all(r.size(-1) == longest for r in rows):
        return torch.stack(list(rows)), None
    batch = rows[0].new_zeros((len(rows), rows[0].size(0), longest))
    for i, r in enumerate(rows):
        batch[i, :, : r.size(-1)] = r
    return batch, torch.tensor([r.size(-1) for r in rows], device=batch.device)


def _frame_mask(lengths: Tensor, steps: int, dtype: torch.dtype) -> Tensor:
    """(B, 1, steps) 1.0 where a frame is inside its row."""
    return (torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(1).to(dtype)


def _draw(fn: Any, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Random numbers from ``generator`` (on its own device), moved to ``device``."""
    if generator is None:
        return fn(shape, device=device)
    return fn(shape, generator=generator, device=generator.device).to(device)


class HiFTGenerator(nn.Module):
    """The official HiFT vocoder; ``state_dict()`` keys equal those of the official ``hift.pt``."""

    def __init__(self, cfg: HiFTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_up = len(cfg.upsample_rates)
        self.f0_predictor = F0Predictor(cfg.f0_in_channels, cfg.f0_cond_channels)
        self.m_source = HarmonicSource(cfg)
        self.conv_pre = _wn_conv(nn.Conv1d(cfg.in_channels, cfg.base_channels, 7, padding=3))
        self.ups = nn.ModuleList(
            _wn_conv(
                nn.ConvTranspose1d(
                    cfg.base_channels // (2**i), cfg.stage_channels(i), k, stride=u, padding=(k - u) // 2
                )
            )
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        spec_bins = cfg.n_fft + 2  # real and imaginary parts of n_fft/2 + 1 bins
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, stride in enumerate(cfg.source_strides()):
            ch = cfg.stage_channels(i)
            if stride == 1:
                self.source_downs.append(nn.Conv1d(spec_bins, ch, 1))
            else:
                self.source_downs.append(nn.Conv1d(spec_bins, ch, stride * 2, stride=stride, padding=stride // 2))
            self.source_resblocks.append(
                ResBlock(ch, cfg.source_resblock_kernel_sizes[i], cfg.source_resblock_dilation_sizes[i])
            )
        self.resblocks = nn.ModuleList(
            ResBlock(cfg.stage_channels(i), k, d)
            for i in range(n_up)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        self.conv_post = _wn_conv(nn.Conv1d(cfg.stage_channels(n_up - 1), spec_bins, 7, padding=3))
        self.register_buffer("stft_window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "HiFTGenerator":
        """Build (random weights) from the ``hift:`` section numbers with official key names."""
        return cls(HiFTConfig.from_section(section))

    @property
    def sampling_rate(self) -> int:
        return self.cfg.sampling_rate

    @property
    def samples_per_frame(self) -> int:
        return self.cfg.samples_per_frame

    def fuse_weight_norm(self) -> "HiFTGenerator":
        """Fold g·v/‖v‖ into plain weights for faster inference (state_dict keys change; load first)."""
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self

    def _source_spectrum(self, source: Tensor) -> Tensor:
        """(B, 1, L) → (B, n_fft + 2, L / hop + 1): real parts then imaginary parts."""
        spec = torch.stft(
            source.squeeze(1).float(),
            self.cfg.n_fft,
            self.cfg.hop_len,
            self.cfg.n_fft,
            window=self.stft_window.float(),
            return_complex=True,
        )
        return torch.cat([spec.real, spec.imag], dim=1).to(source.dtype)

    def decode(self, mel: Tensor, source: Tensor) -> Tensor:
        """mel (B, C, T) and excitation (B, 1, T·spf) → waveform (B, T·spf), clamped to audio_limit."""
        return self._istft(self._spectrum(mel, self._source_spectrum(source), None))

    def _spectrum(self, mel: Tensor, s_spec: Tensor, lengths: Tensor | None) -> Tensor:
        """mel (B, C, T) + source spectrum → the iSTFT head's (B, n_fft + 2, T·∏rates + 1) log-magnitude/phase.

        ``lengths`` (B,) real mel frames per row of a right-padded batch (None: no padding). Each conv's
        output is then cut at the row's end at every rate, so every later conv sees zeros there,
        exactly the zero padding the row gets alone: a row's real samples ignore its batch-mates.
        """
        cfg = self.cfg
        rate = 1

        def mask_at(extra: int = 0) -> Tensor | None:
            if lengths is None:
                return None
            steps = torch.arange(mel.size(-1) * rate + extra, device=mel.device)
            return (steps.unsqueeze(0) < (lengths * rate + extra).unsqueeze(1)).unsqueeze(1).to(mel.dtype)

        def cut(x: Tensor, mask: Tensor | None) -> Tensor:
            return x if mask is None else x * mask

        x = cut(self.conv_pre(mel), mask_at())
        n_k = len(cfg.resblock_kernel_sizes)
        last = len(self.ups) - 1
        for i, up in enumerate(self.ups):
            rate *= cfg.upsample_rates[i]
            x = up(F.leaky_relu(x, cfg.lrelu_slope))
            extra = 0
            if i == last:
                x = F.pad(x, (1, 0), mode="reflect")  # one frame more, to match the iSTFT frame count
                extra = 1
            mask = mask_at(extra)
            x = cut(x, mask)
            x = x + self.source_resblocks[i](cut(self.source_downs[i](s_spec), mask), mask)
            x = sum(self.resblocks[i * n_k + j](x, mask) for j in range(n_k)) / n_k
        return self.conv_post(F.leaky_relu(x))  # the official model uses the default 0.01 slope here

    def _istft(self, x: Tensor) -> Tensor:
        """The head's (B, n_fft + 2, F) output → waveform (B, (F - 1)·hop), clamped to audio_limit."""
        cfg = self.cfg
        bins = cfg.n_fft // 2 + 1
        magnitude = torch.exp(x[:, :bins]).clamp(max=_MAX_MAGNITUDE).float()
        phase = torch.sin(x[:, bins:]).float()
        spec = torch.polar(magnitude, phase)
        wave = torch.istft(spec, cfg.n_fft, cfg.hop_len, cfg.n_fft, window=self.stft_window.float())
        return wave.clamp(-cfg.audio_limit, cfg.audio_limit)  # float32 whatever the weights' dtype

    @torch.inference_mode()
    def f0_rows(self, mels: Sequence[Tensor]) -> list[Tensor]:
        """F0 (T_i,) in Hz of each mel (80, T_i), all in one right-padded batch (each row as alone)."""
        batch, lengths = _pad_rows(mels)
        mask = None if lengths is None else _frame_mask(lengths, batch.size(-1), batch.dtype)
        f0 = self.f0_predictor(batch, mask)
        return [f0[i, : m.size(-1)] for i, m in enumerate(mels)]

    @torch.inference_mode()
    def decode_rows(self, mels: Sequence[Tensor], sources: Sequence[Tensor]) -> list[Tensor]:
        """Waveform (T_i·spf,) of each (mel (80, T_i), excitation (1, T_i·spf)), the convs as one batch.

        Why per row around the batch: the source STFT and the iSTFT pad by reflection at a row's ends
        and normalise by the window overlap there, so they run on each row alone (cheap: a 16-point
        FFT); the convolutions, where the time goes, run once for the padded batch with every conv's
        output cut at each row's end (see :meth:`_spectrum`).
        """
        specs = [self._source_spectrum(src.reshape(1, 1, -1).to(mel.dtype)) for mel, src in zip(mels, sources)]
        batch, lengths = _pad_rows(mels)
        s_spec, _ = _pad_rows([spec[0] for spec in specs])
        head = self._spectrum(batch, s_spec, lengths)
        frames = [spec.size(-1) for spec in specs]
        return [self._istft(head[i : i + 1, :, : frames[i]])[0] for i in range(len(mels))]

    def source(self, mel: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """mel (B, C, T) → NSF excitation (B, 1, T·spf); random unless ``generator`` is given."""
        return self.m_source(self.f0_predictor(mel), generator)

    @torch.inference_mode()
    def inference(self, mel: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """mel (B, 80, T) → waveform (B, T·480) at 24 kHz; same ``generator`` state → same output."""
        if mel.dim() != 3 or mel.shape[1] != self.cfg.in_channels:
            raise ValueError(f"mel must be (B, {self.cfg.in_channels}, T), got {tuple(mel.shape)}")
        if mel.shape[2] == 0:
            return mel.new_zeros(mel.shape[0], 0)
        return self.decode(mel, self.source(mel, generator))


def expected_hift_state_shapes(section: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every key of the official ``hift.pt`` for these numbers, with its shape.

    Derived from the architecture independently of :class:`HiFTGenerator`, so a
    test can hold the module to the checkpoint naming. Weight-normed layers
    contribute ``parametrizations.weight.original0`` (g: dim 0 of the weight,
    then ones) and ``original1`` (v: the weight's shape) plus ``bias``.
    """
    cfg = HiFTConfig.from_section(section)
    shapes: dict[str, tuple[int, ...]] = {}

    def wn(prefix: str, weight: tuple[int, ...], bias: int) -> None:
        shapes[f"{prefix}.parametrizations.weight.original0"] = (weight[0],) + (1,) * (len(weight) - 1)
        shapes[f"{prefix}.parametrizations.weight.original1"] = weight
        shapes[f"{prefix}.bias"] = (bias,)

    def plain(prefix: str, weight: tuple[int, ...]) -> None:
        shapes[f"{prefix}.weight"] = weight
        shapes[f"{prefix}.bias"] = (weight[0],)

    def resblock(prefix: str, ch: int, kernel: int, dilations: Sequence[int]) -> None:
        for j in range(len(dilations)):
            wn(f"{prefix}.convs1.{j}", (ch, ch, kernel), ch)
            wn(f"{prefix}.convs2.{j}", (ch, ch, kernel), ch)
            shapes[f"{prefix}.activations1.{j}.alpha"] = (ch,)
            shapes[f"{prefix}.activations2.{j}.alpha"] = (ch,)

    cond = cfg.f0_cond_channels
    for i in range(F0_PREDICTOR_LAYERS):
        wn(f"f0_predictor.condnet.{2 * i}", (cond, cfg.in_channels if i == 0 else cond, 3), cond)
    plain("f0_predictor.classifier", (1, cond))
    plain("m_source.l_linear", (1, cfg.nb_harmonics + 1))
    wn("conv_pre", (cfg.base_channels, cfg.in_channels, 7), cfg.base_channels)
    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
        cin, cout = cfg.base_channels // (2**i), cfg.stage_channels(i)
        wn(f"ups.{i}", (cin, cout, k), cout)  # transposed conv: weight is (in, out, k)
    for i, stride in enumerate(cfg.source_strides()):
        ch = cfg.stage_channels(i)
        plain(f"source_downs.{i}", (ch, cfg.n_fft + 2, 1 if stride == 1 else 2 * stride))
        resblock(
            f"source_resblocks.{i}", ch, cfg.source_resblock_kernel_sizes[i], cfg.source_resblock_dilation_sizes[i]
        )
    n_k = len(cfg.resblock_kernel_sizes)
    for i in range(len(cfg.upsample_rates)):
        for j, (k, d) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)):
            resblock(f"resblocks.{i * n_k + j}", cfg.stage_channels(i), k, d)
    last = cfg.stage_channels(len(cfg.upsample_rates) - 1)
    wn("conv_post", (cfg.n_fft + 2, last, 7), cfg.n_fft + 2)
    return shapes


def load_hift(
    path: Path | str, section: Mapping[str, Any], device: torch.device | str = "cpu", fuse: bool = True
) -> HiFTGenerator:
    """Build from the section, load ``hift.pt`` strictly, optionally fold weight norm, eval on ``device``."""
    model = HiFTGenerator.from_config(section)
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match the hift section of cosyvoice.yaml: {exc}") from exc
    if fuse:
        model.fuse_weight_norm()
    return model.to(device).eval()
