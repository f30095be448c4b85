"""Decoder batching: the token-to-wave decoder alone, one job at a time against batched, side by side.

Prints figures, asserts nothing. One run measures, on one Token2Wav:

- the decoder's own throughput (``run_batch``, no threads): mel frames per second (50 frames = 1 s of
  audio) for batches of 1, 4 and 16 whole utterances of equal length;
- N whole decodes sent at once from N threads (8 and 16), through a ``DecoderWorker`` with
  ``max_batch=1`` (one at a time, as the old lock) and with the default batch: wall time, audio seconds
  per wall second, per-request latency p50/p95;
- N streams at once (8 and 16), codec ids pushed as fast as the decoder takes them (an LLM that is never
  the bottleneck), or at ``--ids-per-s`` per stream: first audio p50/p95 and stream wall p50/p95, for
  both settings; plus one stream alone for reference.
- long rows (``--long-rows``, flow frames of prompt + output at 25 a second; an edit's 25 s piece over its
  own 25 s prompt is ~1250): four rows decoded as one batch against one after another. On a CPU the
  batch stops paying as rows grow (``CPU_DECODER_BATCH_FRAMES`` caps a batch's padded frames there).

    .venv/bin/python -m bench.bench_decoder                 # tiny random decoder, CPU, one torch thread
    .venv/bin/python -m bench.bench_decoder --official-size --seconds 3
    .venv/bin/python -m bench.bench_decoder --decoder-dir MODELS/Step-Audio-EditX/CosyVoice-300M-25Hz --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.common import at_once, percentile
from runners.models.decoder.batch import run_batch
from runners.decoder_worker import DEFAULT_MAX_BATCH, DecoderWorker
from runners.models.tiny import random_codec_ids
from runners.models.decoder.token2wav import Token2Wav


def voice(k: int, seconds: float) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Prompt ids, prompt mel and speaker of voice k (``seconds`` of prompt)."""
    g = torch.Generator().manual_seed(100 + k)
    n = int(seconds * 25 / 3 * 5)
    return random_codec_ids(n, 50 + k), torch.randn(1, int(seconds * 50) + 7, 80, generator=g), torch.randn(1, 192, generator=g)


def throughput(t2w: Token2Wav, ids: list[int], prompt: tuple, sizes: list[int], repeats: int) -> None:
    print("decoder alone (run_batch, equal lengths)")
    print("  batch   wall_s   mel_frames/s   audio_s/s")
    for size in sizes:
        best = float("inf")
        frames = 0
        for _ in range(repeats):
            jobs = [t2w.job(ids, *prompt, seed=s) for s in range(size)]
            start = time.perf_counter()
            errors = run_batch(t2w, jobs)
            best = min(best, time.perf_counter() - start)
            assert not any(errors), errors
            frames = sum(job.output().mel.size(-1) for job in jobs)
        print(f"  {size:5d}  {best:7.3f}  {frames / best:13.0f}  {frames / 50 / best:10.2f}")


def long_rows(t2w: Token2Wav, frames: list[int], out_frames: int = 150, rows: int = 4) -> None:
    """Rows of ``frames`` flow frames each (``out_frames`` generated, the rest prompt): batched vs one by one."""
    print(f"\nlong rows ({rows} rows, {out_frames} frames generated each, the rest prompt)")
    print("  frames   together_s   one_by_one_s   batch gain")
    for n in frames:
        prompt = voice(0, (n - out_frames) / 25)
        ids = random_codec_ids(out_frames * 5 // 3, 9)
        def once(batches: list[list[int]]) -> float:
            start = time.perf_counter()
            for batch in batches:
                errors = run_batch(t2w, [t2w.job(ids, *prompt, seed=s) for s in batch])
                assert not any(errors), errors
            return time.perf_counter() - start
        together = min(once([list(range(rows))]) for _ in range(2))
        alone = min(once([[s] for s in range(rows)]) for _ in range(2))
        print(f"  {n:6d}  {together:11.3f}  {alone:13.3f}  {alone / together:10.2f}x")


def whole(worker: DecoderWorker, n: int, ids: list[int], prompts: list[tuple]) -> tuple[float, list[float], float]:
    """(wall s, per-request latencies, audio s) of n whole decodes at once."""

    def call(k: int):  # noqa: ANN202
        def run() -> tuple[float, int]:
            start = time.perf_counter()
            samples, _ = worker.synthesize(ids, *prompts[k % len(prompts)], seed=k)
            return time.perf_counter() - start, samples.size

        return run

    wall, results = at_once([call(k) for k in range(n)])
    return wall, [r[0] for r in results], sum(r[1] for r in results) / worker.t2w.sample_rate


def streams(worker: DecoderWorker, n: int, ids: list[int], prompts: list[tuple], ids_per_s: float | None) -> tuple[list[float], list[float]]:
    """(first-audio seconds, stream seconds) of n streams at once."""

    def call(k: int):  # noqa: ANN202
        def run() -> tuple[float, float]:
            start = time.perf_counter()
            session = worker.stream(*prompts[k % len(prompts)], seed=k)
            first = None
            for i in range(0, len(ids), 5):
                if ids_per_s:
                    lag = start + (i + 5) / ids_per_s - time.perf_counter()
                    if lag > 0:
                        time.sleep(lag)
                if session.push(ids[i : i + 5]) and first is None:
                    first = time.perf_counter() - start
            session.finish()
            done = time.perf_counter() - start
            return (first if first is not None else done), done

        return run

    _, results = at_once([call(k) for k in range(n)])
    return [r[0] for r in results], [r[1] for r in results]


def p(values: list[float]) -> str:
    return f"{percentile(values, 0.5):6.3f} / {percentile(values, 0.95):6.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decoder-dir", type=Path, help="a CosyVoice-300M-25Hz folder (default: a random one)")
    ap.add_argument("--official-size", action="store_true", help="random decoder at the release's dimensions")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=4.0, help="audio per request")
    ap.add_argument("--prompt-seconds", type=float, default=3.0)
    ap.add_argument("--ids-per-s", type=float, default=None, help="pace of codec ids per stream (default: no pacing)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps figures comparable on a busy machine)")
    ap.add_argument("--concurrency", default="8,16")
    ap.add_argument("--max-wait-ms", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=2, help="runs per setting and N, taken in turn")
    ap.add_argument("--long-rows", default="400,700,1250", help="flow frames per row for the long-rows figure "
                    "(empty: skip)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.decoder_dir is None:
        from runners.models.store import DECODER_DIR, LLM_DIR
        from runners.models.tiny.decoder import write_decoder_part

        decoder_dir = Path(tempfile.mkdtemp(prefix="bench-decoder-")) / LLM_DIR / DECODER_DIR
        write_decoder_part(decoder_dir, seed=0, official_size=args.official_size)
    else:
        decoder_dir = args.decoder_dir
    t2w = Token2Wav(decoder_dir, device=args.device)
    ids = random_codec_ids(int(args.seconds * 25 / 3 * 5), 4)
    prompts = [voice(k, args.prompt_seconds) for k in range(4)]
    counts = [int(c) for c in args.concurrency.split(",")]
    print(f"decoder {decoder_dir} on {args.device}, {args.threads} torch thread(s); {args.seconds:.1f} s per request, "
          f"prompt {args.prompt_seconds:.1f} s; ids per stream per s: {args.ids_per_s or 'unpaced'}")

    t2w.synthesize(ids[:50], *prompts[0], seed=1)  # warm-up
    throughput(t2w, ids, prompts[0], [1, 4, DEFAULT_MAX_BATCH], repeats=2)
    if args.long_rows:
        long_rows(t2w, [int(n) for n in args.long_rows.split(",")])

    settings = {"max_batch=1": 1, f"max_batch={DEFAULT_MAX_BATCH}": DEFAULT_MAX_BATCH}
    workers = {name: DecoderWorker(t2w, max_batch=b, max_wait_ms=args.max_wait_ms).start() for name, b in settings.items()}
    # a shared machine's load drifts: the settings take turns (A B B A …) and their runs are pooled
    order = [name for r in range(args.rounds) for name in (list(workers) if r % 2 == 0 else list(workers)[::-1])]
    try:
        print(f"\nwhole decodes at once (worker; {args.rounds} rounds, settings in turn, latencies pooled)")
        print("  N   setting        wall_s   audio_s/s   latency p50 / p95 s")
        for n in counts:
            got: dict[str, list] = {name: [] for name in workers}
            for name in order:
                got[name].append(whole(workers[name], n, ids, prompts))
            for name, runs in got.items():
                wall = sum(r[0] for r in runs) / len(runs)
                audio = sum(r[2] for r in runs) / len(runs)
                print(f"  {n:2d}  {name:13s}  {wall:6.2f}  {audio / wall:10.2f}   {p([x for r in runs for x in r[1]])}")
        print(f"\nstreams at once (worker; {args.rounds} rounds, settings in turn, pooled)")
        print("  N   setting        first audio p50 / p95 s   stream p50 / p95 s")
        for n in [1] + counts:
            got = {name: [] for name in workers}
            for name in order:
                got[name].append(streams(workers[name], n, ids, prompts, args.ids_per_s))
            for name, runs in got.items():
                first = [x for r in runs for x in r[0]]
                total = [x for r in runs for x in r[1]]
                print(f"  {n:2d}  {name:13s}  {p(first)}          {p(total)}")
        for name, w in workers.items():
            s = w.stats()
            print(f"{name}: {s.batches} batches, mean size {s.mean_batch_size:.2f}, mean {s.mean_batch_seconds * 1000:.1f} ms "
                  f"per batch, sizes {s.batch_sizes}")
    finally:
        for w in workers.values():
            w.stop()


if __name__ == "__main__":
    main()
