"""Concurrency: aggregate speed at 1/4/8/16 concurrent clones over real HTTP, streaming latency, decode steps.

Prints figures, asserts nothing. One run measures everything side by side:

- audio seconds per wall second with N clients sending clones at once, and the ratio to N clones sent
  one after another (serial) in the same run;
- with ``stream=true``: time to the first audio bytes against the time of the whole request (p50/p95),
  for one sentence (1 client, then 8 at once) and for a paragraph that is split into sentences;
- the LLM decode step alone at batch 1, 8 and 16 (ms per step, ids per second).

    .venv/bin/python -m bench.bench_concurrency             # tiny random model, this machine
    .venv/bin/python -m bench.bench_concurrency --model /path/to/MODELS --tokens 400
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from bench.common import at_once, percentile


def tone(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 150 * t + 2 * np.sin(2 * np.pi * 4 * t)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


VOICE = tone(3.0)


PARAGRAPH = ("This is the first sentence of a short paragraph, spoken in a borrowed voice today. "
             "The second sentence follows it closely, with a little more to say than the first one had. "
             "A third sentence carries the thought along for a while, at an easy and even pace. "
             "The fourth one closes the paragraph, so that the text runs past three hundred characters.")


def clone(url: str, k: int, stream: bool = False, text: str | None = None) -> tuple[float, float, float]:
    """(audio seconds, first-audio seconds, total seconds) of one clone."""
    data = {"target_text": text or f"This is request {k}, spoken in a borrowed voice.", "prompt_text": "a test prompt",
            "seed": str(k), "stream": "true" if stream else "false"}
    start = time.perf_counter()
    first = None
    body = b""
    with httpx.stream("POST", f"{url}/clone", files={"prompt_audio": ("v.wav", VOICE)}, data=data,
                      timeout=900) as r:
        r.raise_for_status()
        for piece in r.iter_bytes():
            if first is None and len(body) + len(piece) > 44:
                first = time.perf_counter() - start
            body += piece
    total = time.perf_counter() - start
    samples, rate = sf.read(io.BytesIO(body), dtype="float32")
    return samples.size / rate, first or total, total


def burst(url: str, n: int, stream: bool = False, offset: int = 0) -> tuple[float, list[tuple[float, float, float]]]:
    return at_once([lambda i=i: clone(url, offset + i, stream) for i in range(n)])


def report_streams(what: str, results: list[tuple[float, float, float]]) -> None:
    """First audio and first/total of streamed clones, p50 and p95."""
    firsts = [r[1] for r in results]
    totals = [r[2] for r in results]
    ratios = [r[1] / r[2] for r in results]
    print(f"  {what}: first audio p50 {percentile(firsts, 0.5):.2f} s (p95 {percentile(firsts, 0.95):.2f}) of "
          f"p50 {percentile(totals, 0.5):.2f} s; first/total p50 {percentile(ratios, 0.5):.2f}, "
          f"p95 {percentile(ratios, 0.95):.2f}")


def decode_steps(model_root: Path, batches: tuple[int, ...], steps: int = 30) -> None:
    import torch

    from runners.models.step1.llm import Step1LM

    lm = Step1LM.from_pretrained(model_root / "Step-Audio-EditX", device="cuda" if torch.cuda.is_available() else "cpu",
                                 dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    cache = lm.new_cache(max(batches), 1024)
    for slot in range(max(batches)):
        lm.prefill(cache, slot, list(range(100, 400)), 0)
    print("\ndecode step (prompt 300 ids per row):")
    base = None
    for batch in batches:
        ids = torch.zeros(batch, dtype=torch.long, device=lm.device)
        positions = torch.tensor(cache.lengths[:batch], device=lm.device)
        for _ in range(3):
            lm.decode_step(cache, ids, positions, 301)
        if lm.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            lm.decode_step(cache, ids, positions, 301)
        if lm.device.type == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) / steps * 1000
        base = base or ms
        print(f"  batch {batch:2d}: {ms:7.2f} ms/step  {batch * 1000 / ms:8.0f} ids/s  "
              f"({ms / base:.2f}x the batch-1 step for {batch}x the ids)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="model root, or 'tiny' (random weights)")
    parser.add_argument("--tokens", type=int, default=120, help="ids per answer (EDITX_MAX_NEW_TOKENS)")
    parser.add_argument("--levels", default="1,4,8,16")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    import bentoml

    from runners.models.tiny import build_tiny_model_root

    root = Path(args.model) if args.model != "tiny" else Path(tempfile.mkdtemp()) / "tiny"
    if args.model == "tiny":
        build_tiny_model_root(root, seed=0)
    os.environ.update({"EDITX_MODEL_PATH": str(root), "EDITX_CACHE_DIR": "", "HF_HUB_OFFLINE": "1",
                       "EDITX_MAX_NEW_TOKENS": str(args.tokens), "EDITX_MAX_BATCH": str(max(levels))})
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from service import EditXService
    from tests.service_helpers import free_port, wait_ready

    with bentoml.serve(EditXService, port=free_port(), host="127.0.0.1") as server:
        url = server.url
        wait_ready(url, timeout=600)
        clone(url, 0)  # warm up: the prompt features are cached from here on
        print(f"model: {args.model}, {args.tokens} ids per answer, {os.cpu_count()} CPU cores")
        print(f"{'clients':>8} {'serial s':>9} {'concurrent s':>13} {'audio s/wall s':>15} {'vs serial':>10}")
        for n in levels:
            start = time.perf_counter()
            for i in range(n):
                clone(url, 1000 + i)
            serial_wall = time.perf_counter() - start
            wall, together = burst(url, n, offset=2000)
            audio = sum(r[0] for r in together)
            print(f"{n:8d} {serial_wall:9.2f} {wall:13.2f} {audio / wall:15.2f} {serial_wall / wall:9.2f}x")
        # The first chunk needs 15 frames + 3 of lookahead = 18 frames = 30 of the answer's ids
        # (5 ids per 3 frames): for a short answer that alone is a large share of the request.
        floor = 30 / args.tokens
        print(f"\nstreaming: the first audio needs 30 of {args.tokens} ids, so first/total >= {floor:.2f} "
              "before prefill, flow and vocoder")
        report_streams("1 client, one sentence, 5 in a row", [clone(url, 4000 + k, stream=True) for k in range(5)])
        report_streams("8 clients at once, one sentence each", burst(url, 8, stream=True, offset=3000)[1])
        report_streams(f"1 client, a paragraph ({len(PARAGRAPH)} characters: 4 sentences made together), 3 in a row",
                       [clone(url, 5000 + k, stream=True, text=PARAGRAPH) for k in range(3)])
        stats = httpx.get(f"{url}/status", timeout=10).json()["scheduler"]
        print(f"scheduler: {stats['steps']} steps, {stats['generated_tokens']} ids, {stats['finished']} finished, "
              f"{stats['prefix_hits']} prompt heads copied ({stats['prefill_tokens_reused']} prefill ids saved)")
    decode_steps(root, (1, 8, 16))


if __name__ == "__main__":
    main()
