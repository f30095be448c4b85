"""Streaming token→wave decoding: audio pieces while the LLM is still generating codec ids.

:class:`StreamingDecoder` wraps one :class:`~runners.token2wav.Token2Wav` for one request. Codec ids
arrive in any amount (:meth:`~StreamingDecoder.push`); whenever enough 25 Hz frame pairs are known the
next chunk is decoded. Chunks follow a schedule of 15, 24, then 48 frame pairs (0.6 s, 0.96 s, 1.92 s),
so the first audio comes early and later chunks amortise the per-call cost.

How a chunk is made, and why the stream stays close to the non-streamed decode of the same seed:

1. **Flow over a window with lookahead.** The flow runs on the prompt plus the token frames from
   ``context_frames`` before the chunk (``None``: from the start) to ``lookahead`` frames past its end.
   The flow's noise is sliced at the frames' absolute positions, so every frame gets the noise it gets
   in the whole-utterance call. The chunk's mel is kept; the lookahead's mel is only used as right
   context for the vocoder (it changes once the following tokens are known).
2. **Mel cross-fade.** The last ``crossfade_frames`` mel frames of a chunk stay open; the next flow
   window covers them again (with more future context) and the two versions are blended with a
   normalised Hamming ramp, old → new, so chunk seams do not jump.
3. **Speed.** ``speed`` ≠ 1 resamples the settled mel in time (linear interpolation, the same
   function as :func:`time_scale_mel` in the non-streamed path), so duration changes and pitch does not.
4. **Vocoder with a continuous source.** HiFT's excitation is a sum of sines whose phase integrates
   F0 over the whole utterance, plus noise. The decoder keeps the phase history and draws the noise
   from one generator in sample order, the same draws as the whole-utterance call makes on the CPU, so
   the excitation continues across chunks instead of restarting. Each piece is vocoded from settled mel
   with ``vocoder_context`` frames of left context and the open/lookahead frames as right context; the
   last ``vocoder_hold`` settled frames wait for the next chunk, whose window sees them with final
   right context.

Without cross-chunk attention the flow's output for a frame depends on the future tokens it could
not see, so the stream is close to, not equal to, the whole-utterance decode; tests/test_streaming.py
measures and bounds the gap. The total length equals the non-streamed length exactly. Measured on
the tiny random decoder (CPU, one thread, bench/bench_streaming.py): stream mel 35–37 dB SNR against
the whole call's mel; vocoding in pieces alone ≈ 68 dB; the first piece costs ~0.09 s of compute
(the whole 10 s call ~0.48 s); the whole stream ~2.3× one whole call, flat per 48-frame chunk.

All state is per instance: any number of decoders may share one Token2Wav (its modules are only
read); calls on one decoder must not overlap. Each chunk is a :class:`~runners.decode_batch.DecodeJob`
(flow window, then vocoder piece) handed to ``runner``: run alone in the caller's thread by default,
or by :class:`runners.decoder_worker.DecoderWorker`, which batches the chunks of many streams while
each decoder keeps its own state (noise, speaker, prompt, source phase and noise, cross-fade).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from runners.decode_batch import DecodeJob, run_alone
from runners.flow.cfm import NOISE_FRAMES, seeded_noise
from runners.flow.flow import FlowRow
from runners.token2wav import Token2Wav, check_speed, scaled_length, time_scale_frames
from runners.tokens import GROUP_SIZE, to_frame_pairs

DEFAULT_SCHEDULE = (15, 24, 48)
DEFAULT_LOOKAHEAD = 3
DEFAULT_CONTEXT = 100  # token frames (4 s) of left context per flow window: bounded cost per chunk
FRAMES_PER_GROUP = 3  # 5 codec ids = 3 frame pairs


def chunk_ends(schedule: Sequence[int]) -> "_ChunkEnds":
    """Iterator of cumulative chunk ends in frame pairs; the last schedule entry repeats forever."""
    return _ChunkEnds(tuple(int(s) for s in schedule))


class _ChunkEnds:
    def __init__(self, schedule: tuple[int, ...]) -> None:
        if not schedule or any(s <= 0 for s in schedule):
            raise ValueError(f"schedule must be positive frame counts, got {schedule}")
        self.schedule = schedule

    def end(self, index: int) -> int:
        """End (exclusive, in frame pairs) of chunk ``index``."""
        head = self.schedule[:index + 1]
        rest = max(0, index + 1 - len(self.schedule))
        return sum(head) + rest * self.schedule[-1]


@dataclass
class ChunkTiming:
    """Measured cost of one decoded chunk (flow and vocoder seconds, frames it finalised)."""

    index: int
    frames: int
    flow_seconds: float
    vocoder_seconds: float
    samples: int


@dataclass
class _SourceState:
    """Phase history and noise stream of the NSF excitation, carried from piece to piece."""

    generator: torch.Generator
    coarse: torch.Tensor  # (1, harmonics, settled frames): per-frame phase increment, in cycles per sample
    noise: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (1, drawn samples, harmonics) from noise_start
    noise_start: int = 0


def _hamming_ramp(n: int) -> torch.Tensor:
    """Weights of the new side of an n-frame cross-fade: the rising half of a Hamming window,
    normalised against the falling half so old + new weights sum to one."""
    window = torch.hamming_window(2 * n, periodic=False, dtype=torch.float64)
    rise, fall = window[:n], window[n:]
    return (rise / (rise + fall)).to(torch.float32)


class StreamingDecoder:
    """Incremental codec ids → 24 kHz float32 pieces for one request (see the module docstring).

    ``push(ids)`` returns the pieces that are ready (often none); ``finish()`` returns the rest. The
    pieces concatenated have exactly the length of ``Token2Wav.synthesize(all ids, …, speed=speed)``.
    """

    def __init__(
        self,
        token2wav: Token2Wav,
        prompt_codec_ids: Sequence[int],
        prompt_mel: torch.Tensor,
        speaker: torch.Tensor,
        seed: int | None = None,
        speed: float = 1.0,
        schedule: Sequence[int] = DEFAULT_SCHEDULE,
        lookahead: int = DEFAULT_LOOKAHEAD,
        context_frames: int | None = DEFAULT_CONTEXT,
        crossfade_frames: int = 8,
        vocoder_context: int = 16,
        vocoder_hold: int = 4,
        runner: Callable[[DecodeJob], None] | None = None,
    ) -> None:
        self.t2w = token2wav
        # how a chunk's job is run: alone in this thread, or handed to a decoder worker that batches it
        self._run: Callable[[DecodeJob], None] = runner or (lambda job: run_alone(token2wav, job))
        self.speed = check_speed(speed)
        self.seed = token2wav.default_seed if seed is None else int(seed)
        if lookahead < 0 or crossfade_frames < 0 or vocoder_context < 0 or vocoder_hold < 0:
            raise ValueError("lookahead, crossfade_frames, vocoder_context and vocoder_hold must be ≥ 0")
        if context_frames is not None and context_frames < 0:
            raise ValueError("context_frames must be ≥ 0 or None")
        self.lookahead = int(lookahead)
        self.context_frames = context_frames
        self.crossfade = int(crossfade_frames)
        self.voc_context = int(vocoder_context)
        self.voc_hold = int(vocoder_hold)
        self._chunks = chunk_ends(schedule)
        self._prompt_token, self._prompt_feat, self._spk = token2wav.prepare_prompt(prompt_codec_ids, prompt_mel, speaker)
        self._prompt_frames = self._prompt_feat.size(1)
        self._noise = seeded_noise(self.seed, self.t2w.flow.mel_channels, NOISE_FRAMES)

        self._ids: list[int] = []
        self._chunk_index = 0
        self._done_frames = 0  # token frames whose mel is final (settled or open)
        self._finished = False
        dtype = self.t2w.dtype
        channels = self.t2w.flow.mel_channels
        self._mel = torch.zeros((1, channels, 0), dtype=dtype)  # final mel of the flow (CPU, 50 Hz)
        self._settled = 0  # leading frames of _mel that never change again
        self._lookahead_mel = torch.zeros((1, channels, 0), dtype=dtype)  # provisional mel after _mel
        self._scaled = torch.zeros((1, channels, 0), dtype=dtype)  # settled mel after time scaling
        self._emitted = 0  # scaled frames already sent as samples

        hift = self.t2w.hift
        gen = torch.Generator(device=self.t2w.device)
        gen.manual_seed(self.seed)
        n_sines = hift.m_source.n_sines
        # the whole-utterance source draws its start phases first (they do not reach the output); draw
        # them too so the noise that follows comes from the same place in the generator's stream
        _draw(torch.rand, (1, n_sines), gen)
        self._source = _SourceState(gen, torch.zeros((1, n_sines, 0)), torch.zeros((1, 0, n_sines)))
        self.timings: list[ChunkTiming] = []

    # -- public -----------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.t2w.sample_rate

    def push(self, codec_ids: Sequence[int]) -> list[np.ndarray]:
        """Add newly generated codec ids (any count); return the pieces that became ready (maybe none)."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        self._ids.extend(int(c) for c in codec_ids)
        pieces: list[np.ndarray] = []
        complete = (len(self._ids) // GROUP_SIZE) * FRAMES_PER_GROUP
        while True:
            end = self._chunks.end(self._chunk_index)
            if complete < end + self.lookahead:
                break
            piece = self._decode_chunk(end, min(complete, end + self.lookahead), final=False)
            if piece.size:
                pieces.append(piece)
        return pieces

    def finish(self) -> list[np.ndarray]:
        """Decode everything still pending (an incomplete last group is padded, as the whole call does)."""
        if self._finished:
            return []
        if not self._ids and self._done_frames == 0:
            raise ValueError("no audio tokens to decode")
        total = to_frame_pairs(self._ids).size(1) if self._ids else 0
        piece = self._decode_chunk(total, total, final=True)
        self._finished = True
        return [piece] if piece.size else []

    @property
    def chunk_count(self) -> int:
        """Chunks decoded so far (the flush in :meth:`finish` counts as one)."""
        return self._chunk_index

    @property
    def mel(self) -> torch.Tensor:
        """(1, 80, frames) the flow's mel so far, before time scaling (diagnostics and tests)."""
        return self._mel

    # -- flow --------------------------------------------------------------------------------------

    def _flow_noise(self, start_frame: int, end_frame: int) -> torch.Tensor:
        """The whole-utterance noise of the prompt frames and of token frames [start, end) (mel rate)."""
        up = self.t2w.flow.up_rate
        p = self._prompt_frames
        need = p + up * end_frame
        if need > self._noise.size(-1):  # past ten minutes the whole call's noise depends on its length: ours differs from here
            self._noise = seeded_noise(self.seed, self.t2w.flow.mel_channels, need)
        return torch.cat([self._noise[:, :, :p], self._noise[:, :, p + up * start_frame : need]], dim=2)

    def _decode_chunk(self, end: int, window_end: int, final: bool) -> np.ndarray:
        """Final mel for token frames [done, end) using tokens up to window_end; then vocode what settled.

        The work is one :class:`_ChunkJob`, run by ``runner`` (alone, or batched by a decoder worker);
        the job reads and updates this decoder's state only, in order, while the caller waits.
        """
        job = _ChunkJob(self, end, window_end, final)
        self._run(job)
        self.timings.append(ChunkTiming(job.index, end - job.start, job.flow_seconds, job.vocoder_seconds, job.piece.size))
        return job.piece

    def _flow_row(self, start: int, end: int, window_end: int) -> tuple[FlowRow, int]:
        """The flow window of a chunk whose new frames are [start, end): (row, first token frame w0)."""
        up = self.t2w.flow.up_rate
        reach = max(math.ceil(self.crossfade / up), self.context_frames if self.context_frames is not None else start)
        w0 = max(0, start - reach)
        pairs = to_frame_pairs(self._ids)[:, w0:window_end]
        noise = self._flow_noise(w0, window_end)
        return FlowRow(pairs[0], self._prompt_token[0], self._prompt_feat[0], self._spk.reshape(-1), noise[0]), w0

    def _take_mel(self, job: "_ChunkJob", mel: torch.Tensor | None) -> None:
        """Merge a chunk's window mel (80, frames) into the stream: cross-fade the open frames, keep the lookahead."""
        up = self.t2w.flow.up_rate
        if mel is not None:
            mel = mel.unsqueeze(0).to("cpu")
            start, end, w0 = job.start, job.end, job.w0
            offset = up * (start - w0)  # where the new frames begin inside this window's mel
            open_frames = self._mel.size(-1) - self._settled
            if open_frames:
                old = self._mel[:, :, self._settled :]
                new = mel[:, :, offset - open_frames : offset]
                ramp = _hamming_ramp(open_frames).to(old.dtype)
                self._mel[:, :, self._settled :] = old * (1 - ramp) + new * ramp
            self._mel = torch.cat([self._mel, mel[:, :, offset : up * (end - w0)]], dim=2)
            self._lookahead_mel = mel[:, :, up * (end - w0) :]
            self._done_frames = end
        if job.final:
            self._settled = self._mel.size(-1)
            self._lookahead_mel = self._lookahead_mel[:, :, :0]
        else:
            self._settled = max(self._settled, self._mel.size(-1) - self.crossfade)
        self._chunk_index += 1

    # -- time scaling ------------------------------------------------------------------------------

    def _scaled_views(self, final: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(settled scaled mel, provisional scaled mel after it): the vocoder's input and right context."""
        known = torch.cat([self._mel, self._lookahead_mel], dim=2)
        if self.speed == 1.0:
            return known[:, :, : self._settled], known[:, :, self._settled :]
        total = self._mel.size(-1) if final else None
        settled_out = scaled_length(self._mel.size(-1), self.speed) if final else _scaled_ready(self._settled, self.speed)
        have = self._scaled.size(-1)
        if settled_out > have:
            fresh = time_scale_frames(self._mel[:, :, : self._settled], self.speed, have, settled_out, total)
            self._scaled = torch.cat([self._scaled, fresh], dim=2)
        if final:
            return self._scaled, self._scaled[:, :, :0]
        reach = _scaled_ready(known.size(-1), self.speed)
        prov = time_scale_frames(known, self.speed, settled_out, max(settled_out, reach), None)
        return self._scaled, prov

    # -- vocoder -----------------------------------------------------------------------------------

    def _vocoder_plan(self, final: bool) -> "_VocoderPlan | None":
        """What to vocode now: the settled frames not yet emitted, with left/right context (None: nothing)."""
        settled, prov = self._scaled_views(final)
        n_settled = settled.size(-1)
        stop = n_settled if final else max(self._emitted, n_settled - self.voc_hold)
        if stop <= self._emitted:
            return None
        known = torch.cat([settled, prov], dim=2)
        w0 = max(0, self._emitted - self.voc_context)
        w1 = known.size(-1)
        # F0 of a frame is exact once five frames each side are in the predictor's input
        f0_from = max(0, min(self._source.coarse.size(-1), w0) - _F0_REACH)
        return _VocoderPlan(known, n_settled, stop, w0, w1, f0_from, final)

    def _vocoder_row(self, plan: "_VocoderPlan", f0_row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mel window, excitation) of a plan, given F0 of its frames; extends the source's phase history."""
        f0 = f0_row.float().cpu().unsqueeze(0)  # (1, frames)
        f0_from, w0, w1 = plan.f0_from, plan.w0, plan.w1
        coarse = self._coarse(f0)  # (1, H, frames) from f0_from
        keep = w1 - f0_from if plan.final else max(0, plan.n_settled - _F0_REACH - f0_from)
        have = self._source.coarse.size(-1)
        if f0_from + keep > have:
            self._source.coarse = torch.cat([self._source.coarse, coarse[:, :, have - f0_from : keep]], dim=2)
        all_coarse = torch.cat([self._source.coarse, coarse[:, :, self._source.coarse.size(-1) - f0_from :]], dim=2)
        source = self._excitation(all_coarse, f0, f0_from, w0, w1, total=w1 if plan.final else None)
        window = plan.known[0, :, w0:w1].to(self.t2w.device)
        return window, source[0].to(self.t2w.device, window.dtype)

    def _take_wave(self, plan: "_VocoderPlan", wave: torch.Tensor) -> np.ndarray:
        """Keep the plan's new samples of the vocoded window; drop source noise no later window needs."""
        spf = self.t2w.hift.samples_per_frame
        piece = wave.reshape(-1)[(self._emitted - plan.w0) * spf : (plan.stop - plan.w0) * spf]
        self._emitted = plan.stop
        self._drop_noise(max(0, plan.stop - self.voc_context - 1) * spf)
        return piece.to(device="cpu", dtype=torch.float32).numpy().copy()

    def _coarse(self, f0: torch.Tensor) -> torch.Tensor:
        """(1, frames) F0 → (1, harmonics, frames) phase increment per sample, in cycles (as HiFT's source)."""
        m = self.t2w.hift.m_source
        multiples = torch.arange(1, m.n_sines + 1, dtype=torch.float32)
        step = torch.remainder(f0.unsqueeze(-1) * multiples / m.sampling_rate, 1.0)  # (1, frames, H)
        return step.transpose(1, 2)

    def _noise_for(self, a: int, b: int) -> torch.Tensor:
        """Source noise of samples [a, b), drawn in sample order from the request's generator."""
        st = self._source
        m = self.t2w.hift.m_source
        drawn_to = st.noise_start + st.noise.size(1)
        if b > drawn_to:
            more = _draw(torch.randn, (1, b - drawn_to, m.n_sines), st.generator)
            st.noise = torch.cat([st.noise, more], dim=1)
        return st.noise[:, a - st.noise_start : b - st.noise_start]

    def _drop_noise(self, before: int) -> None:
        st = self._source
        if before > st.noise_start:
            st.noise = st.noise[:, before - st.noise_start :]
            st.noise_start = before

    def _excitation(
        self, coarse: torch.Tensor, f0: torch.Tensor, f0_from: int, w0: int, w1: int, total: int | None
    ) -> torch.Tensor:
        """NSF excitation (1, 1, samples) of scaled frames [w0, w1), continuing the utterance's phase."""
        m = self.t2w.hift.m_source
        spf = m.samples_per_frame
        phase_frames = torch.cumsum(coarse, dim=2) * (2.0 * math.pi) * spf  # (1, H, frames known)
        n_known = phase_frames.size(-1)
        j = torch.arange(w0 * spf, w1 * spf, dtype=torch.float32)
        scale = torch.tensor(1.0, dtype=torch.float32) / torch.tensor(float(spf), dtype=torch.float32)
        src = (scale * (j + 0.5) - 0.5).clamp_min(0.0)
        lo = src.long()
        lam = (src - lo.float()).clamp(0.0, 1.0)
        last = (total if total is not None else n_known) - 1
        hi = torch.where(lo < last, lo + 1, lo).clamp_max(n_known - 1)
        lo = lo.clamp_max(n_known - 1)
        phase = phase_frames[:, :, lo] * (1 - lam) + phase_frames[:, :, hi] * lam  # (1, H, samples)
        sines = torch.sin(phase.transpose(1, 2)) * m.alpha  # (1, samples, H)
        f0_samples = f0[:, w0 - f0_from : w1 - f0_from].repeat_interleave(spf, dim=1).unsqueeze(-1)
        voiced = (f0_samples > m.threshold).to(sines.dtype)
        noise_scale = voiced * m.sigma + (1.0 - voiced) * (m.alpha / 3.0)
        noise = noise_scale * self._noise_for(w0 * spf, w1 * spf)
        excitation = (sines * voiced + noise).to(m.l_linear.weight.dtype)
        return torch.tanh(m.l_linear(excitation.to(m.l_linear.weight.device))).transpose(1, 2).cpu()


@dataclass
class _VocoderPlan:
    """One vocoder window of a stream: scaled frames [w0, w1) of ``known``, emitting [emitted, stop)."""

    known: torch.Tensor  # (1, 80, frames) settled + provisional scaled mel
    n_settled: int
    stop: int
    w0: int
    w1: int
    f0_from: int
    final: bool


class _ChunkJob(DecodeJob):
    """One chunk of a stream as a decoder job: its flow window, then its vocoder piece.

    Built in the request's thread (the window and its noise at absolute positions); its other steps
    run where the batch runs, updating only its own decoder, in order, while the request waits.
    """

    def __init__(self, decoder: StreamingDecoder, end: int, window_end: int, final: bool) -> None:
        super().__init__()
        self.decoder = decoder
        self.index = decoder._chunk_index
        self.first = self.index == 0
        self.start = decoder._done_frames
        self.end = end
        self.final = final
        self.w0 = 0
        if end > self.start:
            self.flow, self.w0 = decoder._flow_row(self.start, end, window_end)
        self.plan: _VocoderPlan | None = None
        self.piece = np.zeros(0, dtype=np.float32)

    def take_mel(self, mel: torch.Tensor | None) -> None:
        self.decoder._take_mel(self, mel)

    def f0_mel(self) -> torch.Tensor | None:
        self.plan = self.decoder._vocoder_plan(self.final)
        if self.plan is None:
            return None
        return self.plan.known[0, :, self.plan.f0_from : self.plan.w1].to(self.decoder.t2w.device)

    def vocoder_row(self, f0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.plan is not None
        return self.decoder._vocoder_row(self.plan, f0)

    def take_wave(self, wave: torch.Tensor | None) -> None:
        if wave is not None and self.plan is not None:
            self.piece = self.decoder._take_wave(self.plan, wave)


_F0_REACH = 5  # HiFT's F0 predictor: five kernel-3 convolutions see five frames each side


def _scaled_ready(frames: int, speed: float) -> int:
    """How many time-scaled frames depend only on the first ``frames`` input frames."""
    if frames <= 1:
        return 0
    # output j reads input floor(p) and floor(p) + 1, p = (j + 0.5)·speed − 0.5
    j = math.floor((frames - 1 + 0.5) / speed - 0.5)
    while j >= 0 and math.floor(max((j + 0.5) * speed - 0.5, 0.0)) + 1 > frames - 1:
        j -= 1
    return max(0, j + 1)


def _draw(fn, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return fn(shape, generator=generator, device=generator.device).to("cpu")
