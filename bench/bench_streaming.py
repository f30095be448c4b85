"""Streaming token→wave decode against the whole-utterance decode: cost per chunk, first piece, closeness.

Feeds random codec ids to :class:`runners.models.decoder.streaming.StreamingDecoder` as an LLM would (a few ids at a
time) and prints, per chunk, the flow and vocoder seconds (wall) and the thread CPU seconds, then the
totals beside one ``Token2Wav.synthesize`` of the same ids and seed, and the closeness figures the
tests bound (mel SNR, 32-band spectral distance, and the same distance for another seed). Prints
figures; asserts nothing.

    .venv/bin/python -m bench.bench_streaming                         # tiny random decoder, CPU
    .venv/bin/python -m bench.bench_streaming --seconds 20 --context none
    .venv/bin/python -m bench.bench_streaming --decoder-dir MODELS/Step-Audio-EditX/CosyVoice-300M-25Hz --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from runners.models.decoder.streaming import DEFAULT_CONTEXT, StreamingDecoder
from runners.models.tiny import random_codec_ids
from runners.models.decoder.token2wav import Token2Wav


def band_db(x: np.ndarray, n_fft: int = 1024, hop: int = 480, n_bands: int = 32) -> torch.Tensor:
    power = torch.stft(torch.from_numpy(x), n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs() ** 2
    power = power[: n_fft // 2]
    return 10 * torch.log10(power.reshape(n_bands, -1, power.size(-1)).mean(1) + 1e-10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decoder-dir", type=Path, help="a CosyVoice-300M-25Hz folder (default: the tiny random one)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio to generate")
    ap.add_argument("--prompt-seconds", type=float, default=3.0)
    ap.add_argument("--context", default=str(DEFAULT_CONTEXT), help="left context in frame pairs, or 'none' (everything)")
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps figures comparable on a busy machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.decoder_dir is None:
        from runners.models.store import DECODER_DIR, LLM_DIR
        from runners.models.tiny import build_tiny_model_root

        root = build_tiny_model_root(Path(tempfile.mkdtemp(prefix="bench-stream-")), seed=0, parts=("decoder",))
        decoder_dir = root / LLM_DIR / DECODER_DIR
    else:
        decoder_dir = args.decoder_dir
    t2w = Token2Wav(decoder_dir, device=args.device)
    n_ids = int(args.seconds * 25 / 3 * 5)
    ids = random_codec_ids(n_ids, 4)
    prompt = random_codec_ids(int(args.prompt_seconds * 25 / 3 * 5), 1)
    prompt_mel = torch.randn(1, int(args.prompt_seconds * 50) + 7, 80, generator=torch.Generator().manual_seed(2))
    speaker = torch.randn(1, 192, generator=torch.Generator().manual_seed(3))
    context = None if args.context == "none" else int(args.context)

    t2w.synthesize(ids[:50], prompt, prompt_mel, speaker, seed=1)  # warm-up
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    whole = t2w.synthesize(ids, prompt, prompt_mel, speaker, seed=7, speed=args.speed)
    whole_cpu, whole_wall = time.thread_time() - cpu0, time.perf_counter() - wall0

    dec = StreamingDecoder(t2w, prompt, prompt_mel, speaker, seed=7, speed=args.speed, context_frames=context)
    pieces: list[np.ndarray] = []
    calls: list[tuple[float, float, int]] = []  # (cpu, wall, samples) of calls that returned audio
    first_at = None
    for i in range(0, n_ids, 5):
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        got = dec.push(ids[i : i + 5])
        if got:
            calls.append((time.thread_time() - cpu0, time.perf_counter() - wall0, sum(p.size for p in got)))
            first_at = first_at if first_at is not None else i + 5
        pieces += got
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    got = dec.finish()
    calls.append((time.thread_time() - cpu0, time.perf_counter() - wall0, sum(p.size for p in got)))
    pieces += got
    stream = np.concatenate(pieces)
    ref = whole.waveform.numpy()

    print(f"decoder {decoder_dir} on {args.device}; {len(stream) / t2w.sample_rate:.2f} s of audio, prompt "
          f"{args.prompt_seconds:.1f} s, context {context}, speed {args.speed}")
    print("chunk  frames  flow_s  vocoder_s  cpu_s  audio_s")
    for timing, (cpu, _wall, samples) in zip(dec.timings, calls):
        print(f"{timing.index:5d}  {timing.frames:6d}  {timing.flow_seconds:6.3f}  {timing.vocoder_seconds:9.3f}  "
              f"{cpu:5.3f}  {samples / t2w.sample_rate:7.2f}")
    stream_cpu = sum(c for c, _, _ in calls)
    print(f"first piece after {first_at} codec ids; its compute {calls[0][0]:.3f} s CPU ({calls[0][1]:.3f} s wall)")
    print(f"whole call: {whole_cpu:.3f} s CPU ({whole_wall:.3f} s wall, flow {whole.flow_seconds:.3f}, vocoder "
          f"{whole.vocoder_seconds:.3f}); stream total {stream_cpu:.3f} s CPU = {stream_cpu / whole_cpu:.2f}× the whole call")
    other = t2w.synthesize(ids, prompt, prompt_mel, speaker, seed=8, speed=args.speed).waveform.numpy()
    mel_ref = t2w.synthesize(ids, prompt, prompt_mel, speaker, seed=7).mel
    mel_snr = 10 * torch.log10(mel_ref.pow(2).sum() / (dec.mel - mel_ref).pow(2).sum())
    near = float((band_db(stream) - band_db(ref)).abs().mean())
    far = float((band_db(other) - band_db(ref)).abs().mean())
    print(f"length stream {len(stream)} vs whole {len(ref)}; mel SNR {float(mel_snr):.1f} dB; 32-band distance "
          f"{near:.2f} dB (another seed: {far:.2f} dB)")


if __name__ == "__main__":
    main()
