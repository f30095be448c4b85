"""Prompt pipeline figures: cache miss vs hit, memory before/after idle unload, cold load time.

    .venv/bin/python -m bench.bench_prompt_pipeline                  # tiny random model
    .venv/bin/python -m bench.bench_prompt_pipeline --model /models  # real weights

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from bench.bench_pipeline import test_voice
from runners.config import EngineConfig
from runners.engine import EditXEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model root (default: a fresh tiny random model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prompt-seconds", type=float, default=10.0)
    parser.add_argument("--idle-unload-s", type=float, default=1.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from runners.models.tiny import build_tiny_model_root

            model = str(build_tiny_model_root(f"{tmp}/model"))
        cfg = EngineConfig(model_path=model, device=args.device, cache_dir=f"{tmp}/cache",
                           idle_unload_s=args.idle_unload_s)
        engine = EditXEngine(cfg)
        try:
            start = time.perf_counter()
            engine.load()
            cold = time.perf_counter() - start
            print(f"model: {model}  device: {engine.device}")
            print(f"cold load: {cold:.2f} s")

            voice = test_voice(args.prompt_seconds)
            engine.prepare(test_voice(1.0))  # warm-up of one-off kernels, a different audio
            start = time.perf_counter()
            engine.prepare(voice)
            miss = time.perf_counter() - start
            hits = []
            for _ in range(7):  # a hit is a hash and a lookup: take the median of a few
                start = time.perf_counter()
                engine.prepare(voice)
                hits.append(time.perf_counter() - start)
            hit = sorted(hits)[len(hits) // 2]
            print(f"prompt preparation ({args.prompt_seconds:g} s audio): miss {miss * 1000:.1f} ms, "
                  f"hit {hit * 1000:.2f} ms (median of 7), ratio {miss / hit:.0f}x")

            before = engine.status()["memory"]
            deadline = time.monotonic() + args.idle_unload_s + 30
            while engine.state != "unloaded" and time.monotonic() < deadline:
                time.sleep(0.1)
            report = engine.last_unload or {}
            after = report.get("after", engine.status()["memory"])
            print(f"idle unload after {args.idle_unload_s:g} s: state={engine.state}")
            for key in before:
                b, a = float(before[key]), float(after.get(key, 0.0))
                ratio = f"{b / a:.2f}x" if a else "n/a"
                print(f"  {key}: before {b:.1f} MiB, after {a:.1f} MiB, ratio {ratio}")
            start = time.perf_counter()
            engine.prepare(voice)
            print(f"cached prompt while unloaded: {(time.perf_counter() - start) * 1000:.2f} ms (no model needed)")
            start = time.perf_counter()
            engine.load()
            print(f"reload after idle unload: {time.perf_counter() - start:.2f} s")
        finally:
            engine.close()


if __name__ == "__main__":
    main()
