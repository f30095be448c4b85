"""Shared prompt heads: the prefix store on against off, side by side in one run (engine level, no HTTP).

Two engines over the same model, one with ``prefix_cache_tokens`` and one with 0, take turns on:

- N clones in one voice sent at once (different texts, seeded): wall seconds, and the prompt ids
  actually prefilled;
- a long text (about 3,000 characters: its sentences are generated together in one voice);
- the time to the first audio of one streamed clone in a voice seen before.

Prints figures, asserts nothing.

    .venv/bin/python -m bench.bench_prefix                      # tiny random model, this machine
    .venv/bin/python -m bench.bench_prefix --voice-seconds 10 --model /path/to/MODELS
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import at_once
from runners.audio import Audio
from runners.config import EngineConfig
from runners.engine import SENTENCE_MAX_CHARS, EditXEngine
from runners.text.prompts import system_turn_length
from runners.scheduler import SchedulerStats
from runners.text.split import split_text
from tests.runners.test_engine import voice as tone


def wall_of(calls: list) -> float:  # noqa: ANN001 - zero-argument callables
    return at_once(calls)[0]


def prefilled(before: SchedulerStats, after: SchedulerStats, prompt_ids: int) -> int:
    return prompt_ids - (after.prefill_tokens_reused - before.prefill_tokens_reused)


def first_audio_seconds(engine: EditXEngine, voice: Audio, text: str, seed: int) -> float:
    """Seconds from a streamed clone's call to its first audio (prefill, 30 ids, the first chunk's decode)."""
    start = time.perf_counter()
    stream = engine.clone_stream(voice, "a voice prompt", text, seed=seed)
    try:
        for chunk in stream:
            if chunk.samples.size:
                return time.perf_counter() - start
        raise RuntimeError("the stream ended without audio")
    finally:
        stream.close()


def in_thread(call):  # noqa: ANN001, ANN201 - a zero-argument callable and its result
    """``call()`` in a fresh thread, as the service runs requests (torch's thread count is per thread)."""
    return at_once([call])[1][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="model root, or 'tiny' (random weights)")
    parser.add_argument("--voice-seconds", type=float, default=6.0, help="length of the voice prompt")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=60, help="ids per answer (the tiny model never says EOS)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from runners.models.tiny import build_tiny_model_root

    root = Path(args.model) if args.model != "tiny" else build_tiny_model_root(Path(tempfile.mkdtemp()) / "tiny")
    common = dict(model_path=str(root), max_new_tokens=args.tokens, cache_dir="", max_batch=max(16, args.clients))
    engines = {"store on": EditXEngine(EngineConfig(**common)).load(),
               "store off": EditXEngine(EngineConfig(**common, prefix_cache_tokens=0)).load()}
    voice = tone(args.voice_seconds)  # a voiced, modulated tone: the tests' prompt audio
    texts = [f"Request number {k} is spoken in the shared voice." for k in range(args.clients)]
    long_text = " ".join(f"This is sentence {k} of a long text, and it goes on for a while." for k in range(48))
    for engine in engines.values():  # warm up: prompt features cached, the head stored where it can be
        wall_of([lambda e=engine: e.clone(voice, "a voice prompt", "Warming up.", seed=0)])
    reference = engines["store on"]
    prompt = reference.prepare(voice)

    def prompt_ids(text_pieces: list[str]) -> int:
        return sum(len(reference.clone_prompt_ids(prompt, "a voice prompt", t)) for t in text_pieces)

    probe = reference.clone_prompt_ids(prompt, "a voice prompt", texts[0])
    head = system_turn_length(probe)
    sentences = split_text(long_text, max_chars=SENTENCE_MAX_CHARS)
    burst_ids, long_ids = prompt_ids(texts), prompt_ids(sentences)
    print(f"model: {args.model}, voice {args.voice_seconds:g} s, clone prompt {len(probe)} ids of which the shared "
          f"head (system turn) is {head}; {args.tokens} ids per answer; torch threads {torch.get_num_threads()}")

    walls: dict[str, dict[str, list[float]]] = {name: {"burst": [], "long": [], "first": []} for name in engines}
    ids: dict[str, dict[str, int]] = {name: {} for name in engines}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            before = engine.scheduler_stats()
            walls[name]["burst"].append(wall_of(
                [lambda k=k, e=engine: e.clone(voice, "a voice prompt", texts[k], seed=k) for k in range(args.clients)]))
            mid = engine.scheduler_stats()
            walls[name]["long"].append(wall_of([lambda e=engine: e.clone(voice, "a voice prompt", long_text, seed=1)]))
            after = engine.scheduler_stats()
            ids[name]["burst"] = prefilled(before, mid, burst_ids)
            ids[name]["long"] = prefilled(mid, after, long_ids)
            walls[name]["first"] += [in_thread(lambda e=engine, k=k: first_audio_seconds(e, voice, texts[k], k))
                                     for k in range(3)]

    med = {name: {what: statistics.median(v) for what, v in w.items()} for name, w in walls.items()}
    on, off = med["store on"], med["store off"]
    rows = [
        (f"{args.clients} clones in one voice at once, s", on["burst"], off["burst"]),
        ("  prompt ids prefilled", ids["store on"]["burst"], ids["store off"]["burst"]),
        (f"long text ({len(long_text)} chars), s", on["long"], off["long"]),
        (f"  prompt ids prefilled ({len(sentences)} sentences)", ids["store on"]["long"], ids["store off"]["long"]),
        ("first audio of a streamed clone, s", on["first"], off["first"]),
    ]
    print(f"\n{'':44} {'store on':>10} {'store off':>10} {'off / on':>9}")
    for label, with_store, without in rows:
        print(f"{label:44} {with_store:10.3f} {without:10.3f} {without / with_store:8.2f}x" if isinstance(with_store, float)
              else f"{label:44} {with_store:10d} {without:10d}")
    print("(medians of", args.rounds, "rounds, the two engines taking turns)")
    for engine in engines.values():
        engine.close()


if __name__ == "__main__":
    main()
