"""End-to-end figures: seconds per second of audio, split by stage (tokenize, LLM, flow, vocoder).

    .venv/bin/python -m bench.bench_pipeline                # tiny random model (CPU here)
    .venv/bin/python -m bench.bench_pipeline --model /models --device cuda --new-tokens 500

Prints figures; asserts nothing. RTF = processing seconds / seconds of audio produced.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

from runners.audio import Audio
from runners.config import EngineConfig
from runners.engine import EditXEngine


def test_voice(seconds: float, rate: int = 16000) -> Audio:
    t = torch.arange(int(seconds * rate)) / rate
    x = 0.4 * torch.sin(2 * math.pi * 180 * t + 2 * torch.sin(2 * math.pi * 5 * t)) * (0.6 + 0.4 * torch.sin(2 * math.pi * 3 * t))
    return Audio(x.float(), rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model root (default: a fresh tiny random model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prompt-seconds", type=float, default=5.0)
    parser.add_argument("--new-tokens", type=int, default=250, help="generated tokens per request (~6 s of audio)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from runners.models.tiny import build_tiny_model_root

            model = str(build_tiny_model_root(tmp))
        cfg = EngineConfig(model_path=model, device=args.device, max_new_tokens=args.new_tokens, cache_dir="",
                           cache_enabled=False)
        engine = EditXEngine(cfg)
        start = time.perf_counter()
        engine.load()
        print(f"model: {model}  device: {engine.device}  load: {time.perf_counter() - start:.2f} s")
        voice = test_voice(args.prompt_seconds)
        engine.clone(voice, "a benchmark prompt", "Warm up.", seed=0)  # first call pays one-off costs
        totals: dict[str, float] = {}
        audio_s = 0.0
        tokens = 0
        for run in range(args.runs):
            out = engine.clone(voice, "a benchmark prompt", "The quick brown fox jumps over the lazy dog.", seed=run)
            for stage, seconds in out.timings.items():
                totals[stage] = totals.get(stage, 0.0) + seconds
            audio_s += out.duration_s
            tokens += out.generated_tokens
        wall = sum(totals.values())
        print(f"runs: {args.runs}  audio produced: {audio_s:.2f} s  tokens: {tokens}")
        print(f"{'stage':<10}{'seconds':>10}{'s per s of audio':>20}")
        for stage in ("prepare", "llm", "flow", "vocoder"):
            print(f"{stage:<10}{totals.get(stage, 0.0):>10.3f}{totals.get(stage, 0.0) / audio_s:>20.4f}")
        print(f"{'total':<10}{wall:>10.3f}{wall / audio_s:>20.4f}   (RTF)")
        print(f"LLM tokens/s: {tokens / totals['llm']:.1f}")


if __name__ == "__main__":
    main()
