"""Token2Wav: codec ids → 24 kHz waveform, through our flow decoder and the HiFT vocoder.

Loads the official ``CosyVoice-300M-25Hz/`` folder unchanged (``cosyvoice.yaml``,
``flow.pt``, ``hift.pt``). Per call (upstream ``token2wav_nonstream``):

1. generated and prompt codec ids are de-interleaved into 25 Hz frame pairs
   (:func:`runners.tokens.to_frame_pairs`: vq02, vq02, PAD | vq06+1 ×3);
2. the prompt mel is stretched (nearest) to exactly 2 frames per prompt pair,
   because the tokens come from trimmed audio and the mel from untrimmed audio;
3. the flow turns pairs + prompt + speaker into mel for the generated part;
4. HiFT turns that mel into samples (480 per mel frame).

Randomness: the flow's noise and HiFT's excitation noise are both drawn from
generators seeded with the call's seed, so one seed always gives one
waveform. ``seed=None`` uses the instance's ``default_seed``, which mirrors
upstream, where one fixed noise buffer serves every call of a loaded model.

A decode is an :class:`UtteranceJob` (:meth:`Token2Wav.job`): :meth:`Token2Wav.synthesize` runs it
alone, :class:`runners.decoder_worker.DecoderWorker` runs it in a batch with other requests' jobs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from runners.decode_batch import DecodeJob, run_alone
from runners.errors import InvalidInputError
from runners.decoder_config import CONFIG_FILE, DecoderConfig, load_decoder_config
from runners.flow import CausalMaskedDiffWithXvec, FlowRow, seeded_noise
from runners.tokens import to_frame_pairs

FLOW_FILE = "flow.pt"
HIFT_FILE = "hift.pt"
DEFAULT_TIMESTEPS = 10
MIN_SPEED = 0.25
MAX_SPEED = 4.0


@dataclass(frozen=True)
class Token2WavOutput:
    """One decode: the waveform (N,) float32 on the CPU, its mel (1, 80, T) and the time per stage."""

    waveform: torch.Tensor
    mel: torch.Tensor
    flow_seconds: float
    vocoder_seconds: float
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.waveform.numel() / self.sample_rate


def _frame_pairs(codec_ids: Sequence[int]) -> torch.Tensor:
    ids = [int(c) for c in codec_ids]
    if not ids:
        return torch.zeros((1, 0, 2), dtype=torch.long)
    return to_frame_pairs(ids)


def align_prompt_mel(prompt_mel: torch.Tensor, frames: int) -> torch.Tensor:
    """(1, T_mel, 80) → (1, frames, 80) by nearest-neighbour resampling in time (upstream's rule)."""
    if frames == 0 or prompt_mel.size(1) == 0:
        return prompt_mel.new_zeros((prompt_mel.size(0), frames, prompt_mel.size(2)))
    return F.interpolate(prompt_mel.transpose(1, 2), size=frames, mode="nearest").transpose(1, 2)


def check_speed(speed: float) -> float:
    """``speed`` as a float in 0.25–4, or an InvalidInputError (a ValueError) naming the range.

    The one speed check: the preparation stage calls it before anything runs, the decoders
    again as a guard.
    """
    try:
        value = float(speed)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or not MIN_SPEED <= value <= MAX_SPEED:
        raise InvalidInputError(f"speed must be between {MIN_SPEED} and {MAX_SPEED} (1.0 = unchanged), "
                                f"got {speed!r}", field="speed")
    return value


def scaled_length(frames: int, speed: float) -> int:
    """Mel frames after time-scaling ``frames`` by ``speed`` (rounded half up, at least one)."""
    return max(1, math.floor(frames / speed + 0.5)) if frames else 0


def time_scale_frames(mel: torch.Tensor, speed: float, start: int, stop: int, total: int | None) -> torch.Tensor:
    """Output frames [start, stop) of ``mel`` (1, C, T) resampled in time by ``speed``.

    Output frame j is the linear interpolation of the input at p = (j + 0.5)·speed − 0.5 (the
    input is read faster or slower; the spectrum of each frame, hence the pitch, is kept). ``total``
    is the utterance's input length when it is known (the last frame is held past the end); with
    ``None`` the caller guarantees that frame ⌊p⌋ + 1 exists. The streaming decoder computes the
    same frames piece by piece with this function, so both paths give identical mel.
    """
    if stop <= start:
        return mel[:, :, :0]
    j = torch.arange(start, stop, dtype=torch.float64)
    p = ((j + 0.5) * speed - 0.5).clamp_min(0.0)
    lo = p.floor().long()
    lam = (p - lo.double()).to(mel.dtype)
    hi = lo + 1
    if total is not None:
        lo = lo.clamp_max(total - 1)
        hi = hi.clamp_max(total - 1)
    lo, hi = lo.to(mel.device), hi.to(mel.device)
    lam = lam.to(mel.device)
    return mel[:, :, lo] * (1 - lam) + mel[:, :, hi] * lam


def time_scale_mel(mel: torch.Tensor, speed: float) -> torch.Tensor:
    """(1, C, T) mel → (1, C, round(T / speed)): ``speed`` 2.0 halves the duration at the same pitch."""
    return time_scale_frames(mel, speed, 0, scaled_length(mel.size(-1), speed), mel.size(-1))


class Token2Wav:
    """The token-to-wave decoder of one model folder, on one device and dtype."""

    def __init__(
        self,
        decoder_dir: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        n_timesteps: int = DEFAULT_TIMESTEPS,
        default_seed: int = 0,
    ) -> None:
        from runners.hift import load_hift

        self.decoder_dir = Path(decoder_dir)
        self.device = torch.device(device)
        self.dtype = dtype
        self.n_timesteps = int(n_timesteps)
        self.default_seed = int(default_seed)
        self.config: DecoderConfig = load_decoder_config(self.decoder_dir / CONFIG_FILE)

        self.flow = CausalMaskedDiffWithXvec(self.config.flow)
        state = torch.load(self.decoder_dir / FLOW_FILE, map_location="cpu", weights_only=True)
        try:
            self.flow.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{self.decoder_dir / FLOW_FILE} does not match the flow section of {CONFIG_FILE}: {exc}") from exc
        self.flow = self.flow.to(device=self.device, dtype=dtype).eval()
        self.hift = load_hift(self.decoder_dir / HIFT_FILE, self.config.hift, device=self.device).to(dtype=dtype)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def samples_per_token_frame(self) -> int:
        """Samples per 25 Hz frame pair (2 mel frames × hop)."""
        return self.flow.up_rate * self.config.samples_per_mel_frame

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def prepare_prompt(
        self, prompt_codec_ids: Sequence[int], prompt_mel: torch.Tensor, speaker_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Checked flow inputs of a prompt: (prompt frame pairs, aligned prompt mel, speaker (1, 192)).

        prompt_mel (1, T_mel, 80) or (T_mel, 80); speaker_embedding (1, 192) or (192,).
        """
        mel_in = prompt_mel if prompt_mel.dim() == 3 else prompt_mel.unsqueeze(0)
        spk = speaker_embedding if speaker_embedding.dim() == 2 else speaker_embedding.unsqueeze(0)
        if mel_in.size(-1) != self.flow.mel_channels:
            raise ValueError(f"prompt_mel must have {self.flow.mel_channels} bins last, got {tuple(prompt_mel.shape)}")
        if spk.size(-1) != self.config.flow.spk_embed_dim:
            raise ValueError(f"speaker_embedding must be {self.config.flow.spk_embed_dim}-d, got {tuple(spk.shape)}")
        prompt_token = _frame_pairs(prompt_codec_ids)
        prompt_feat = align_prompt_mel(mel_in.float(), prompt_token.size(1) * self.flow.up_rate)
        return prompt_token, prompt_feat, spk

    def job(
        self,
        codec_ids: Sequence[int],
        prompt_codec_ids: Sequence[int],
        prompt_mel: torch.Tensor,
        speaker_embedding: torch.Tensor,
        seed: int | None = None,
        noise: torch.Tensor | None = None,
        speed: float = 1.0,
    ) -> "UtteranceJob":
        """A whole-utterance decode as a :class:`~runners.decode_batch.DecodeJob` (checked here, run later)."""
        return UtteranceJob(self, codec_ids, prompt_codec_ids, prompt_mel, speaker_embedding, seed, noise, speed)

    def synthesize(
        self,
        codec_ids: Sequence[int],
        prompt_codec_ids: Sequence[int],
        prompt_mel: torch.Tensor,
        speaker_embedding: torch.Tensor,
        seed: int | None = None,
        noise: torch.Tensor | None = None,
        speed: float = 1.0,
    ) -> Token2WavOutput:
        """Decode and report the mel and per-stage timings too.

        prompt_mel (1, T_mel, 80) or (T_mel, 80); speaker_embedding (1, 192) or (192,).
        ``noise`` (1, 80, ≥ total mel frames) replaces the seeded flow noise (parity tests).
        ``speed`` (0.25–4.0) resamples the mel in time before the vocoder: 2.0 is twice as fast at
        the same pitch; the returned mel is the resampled one (what was vocoded).
        """
        job = self.job(codec_ids, prompt_codec_ids, prompt_mel, speaker_embedding, seed, noise, speed)
        run_alone(self, job)
        return job.output()

    def __call__(
        self,
        codec_ids: Sequence[int],
        prompt_codec_ids: Sequence[int],
        prompt_mel: torch.Tensor,
        speaker_embedding: torch.Tensor,
        seed: int | None = None,
        speed: float = 1.0,
    ) -> torch.Tensor:
        """(N,) float32 CPU waveform at :attr:`sample_rate` for ``codec_ids`` in the prompt's voice."""
        return self.synthesize(codec_ids, prompt_codec_ids, prompt_mel, speaker_embedding, seed, speed=speed).waveform


class UtteranceJob(DecodeJob):
    """A whole-utterance decode: the flow over prompt + all tokens, time scaling, then the vocoder.

    Its noise (flow) and its generator (vocoder source) come from its own seed, so it decodes to the
    same waveform alone or in any batch.
    """

    def __init__(
        self,
        t2w: Token2Wav,
        codec_ids: Sequence[int],
        prompt_codec_ids: Sequence[int],
        prompt_mel: torch.Tensor,
        speaker_embedding: torch.Tensor,
        seed: int | None,
        noise: torch.Tensor | None,
        speed: float,
    ) -> None:
        super().__init__()
        if len(codec_ids) == 0:
            raise ValueError("no audio tokens to decode")
        self.t2w = t2w
        self.speed = check_speed(speed)
        self.seed = t2w.default_seed if seed is None else int(seed)
        prompt_token, prompt_feat, spk = t2w.prepare_prompt(prompt_codec_ids, prompt_mel, speaker_embedding)
        token = _frame_pairs(codec_ids)
        frames = (prompt_token.size(1) + token.size(1)) * t2w.flow.up_rate
        if noise is None:
            noise = seeded_noise(self.seed, t2w.flow.mel_channels, frames)
        self.flow = FlowRow(token[0], prompt_token[0], prompt_feat[0], spk.reshape(-1), noise[0])
        self.mel: torch.Tensor | None = None  # (1, 80, T) after time scaling
        self.wave: torch.Tensor | None = None

    def take_mel(self, mel: torch.Tensor | None) -> None:
        assert mel is not None
        mel = mel.unsqueeze(0)
        self.mel = time_scale_mel(mel, self.speed) if self.speed != 1.0 else mel

    def f0_mel(self) -> torch.Tensor | None:
        assert self.mel is not None
        return self.mel[0] if self.mel.size(-1) else None

    def vocoder_row(self, f0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.mel is not None
        gen = torch.Generator(device=self.t2w.device)
        gen.manual_seed(self.seed)
        source = self.t2w.hift.m_source(f0.unsqueeze(0), gen)  # (1, 1, samples): draws as the whole call does
        return self.mel[0], source[0]

    def take_wave(self, wave: torch.Tensor | None) -> None:
        assert self.mel is not None
        self.wave = wave if wave is not None else self.mel.new_zeros(0)

    def output(self) -> Token2WavOutput:
        """The decode's result (after the job ran)."""
        assert self.mel is not None and self.wave is not None
        return Token2WavOutput(
            waveform=self.wave.reshape(-1).to(device="cpu", dtype=torch.float32),
            mel=self.mel.to(device="cpu", dtype=torch.float32),
            flow_seconds=self.flow_seconds,
            vocoder_seconds=self.vocoder_seconds,
            sample_rate=self.t2w.sample_rate,
        )
