"""The serving core at the release's size: decode steps, real-time factor, aggregate speed, first audio.

Random weights with the official dimensions (``runners.models.tiny --official-size``: the LLM, flow and
vocoder are exactly as fast as the real ones; the output is noise), run the way the engine runs them,
without HTTP: the scheduler and its engine loop (prefix store, CUDA graphs on CUDA, ids read back every
4 steps there), the decoder worker batching every request's flow and vocoder (``--decoder-batch``). Prompts are
synthetic clones: a voice of ``--voice-seconds`` (its audio ids in the system turn, shared by every
request), a short text each, ``--tokens`` ids per answer (audio ids only, so every answer has that
length). Prints, and asserts nothing:

- the LLM decode step at batch 1, 8 and 16 (ms and ids/s; eager and as CUDA graphs on CUDA);
- one whole clone at a time: real-time factor (LLM + flow + vocoder seconds per second of audio);
- one streamed clone at a time: seconds to its first audio;
- ``--clients`` clones at once, whole and streamed: audio seconds per wall second, first audio p50/p95.

Targets on a GPU in bf16: batch-1 RTF <= 0.15, >= 20x real time at 16 at once, first audio <= 0.5 s.

    .venv/bin/python -m bench.bench_real_size --tiny                # the same code on the tiny model (CPU)
    python3 -m bench.bench_real_size --device cuda                  # the GPU machine: writes a 7.5 GB root

The GPU machine's image lacks pydantic: carry its wheels (``pip download --no-deps --only-binary=:all:
--python-version 3.12 --platform manylinux_2_17_x86_64 -d .whl pydantic pydantic-core annotated-types
typing-inspection``), install them with ``--target`` and put that folder on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import torch

from bench.common import at_once, percentile
from runners.config import EngineConfig
from runners.models.step1.cuda_graphs import decode_function
from runners.models.step1.llm import Step1LM
from runners.models.store import DECODER_DIR, LLM_DIR
from runners.text.prompts import BOS_ID, BOT_ID, EOT_ID, system_turn_length
from runners.models.step1.sampling import SamplingParams
from runners.scheduler import EngineLoop, GenerationRequest, LLMRunner, Scheduler
from runners.decoder_worker import DecoderWorker
from runners.models.tiny import build_tiny_model_root, random_codec_ids
from runners.models.decoder.token2wav import Token2Wav
from runners.models.tokenizers.tokens import CODEC_VOCAB, LLM_AUDIO_OFFSET, TOKENS_PER_SECOND, from_llm_ids

AUDIO_IDS = torch.arange(LLM_AUDIO_OFFSET, LLM_AUDIO_OFFSET + CODEC_VOCAB)


class Voice:
    """A synthetic voice prompt: its codec ids (in the system turn), prompt mel and speaker vector."""

    def __init__(self, seconds: float, seed: int = 1) -> None:
        n = int(seconds * TOKENS_PER_SECOND) // 5 * 5
        self.codec_ids = random_codec_ids(n, seed)
        g = torch.Generator().manual_seed(seed)
        self.mel = 0.5 * torch.randn(1, 2 * (n // 5 * 3), 80, generator=g) - 4.0  # 50 Hz, two frames a pair
        self.speaker = torch.randn(1, 192, generator=g)
        text = torch.randint(200, 60000, (80,), generator=g).tolist()  # instruction and transcript ids
        self.head = [BOS_ID, BOT_ID, *text, *(LLM_AUDIO_OFFSET + c for c in self.codec_ids), EOT_ID]

    def prompt(self, k: int) -> list[int]:
        """The clone prompt of request ``k``: the shared head, then a text of its own."""
        g = torch.Generator().manual_seed(1000 + k)
        return [*self.head, BOT_ID, *torch.randint(200, 60000, (24,), generator=g).tolist(), EOT_ID, BOT_ID, 500, 78]


class ServingCore:
    """The engine's LLM loop and decoder turn-taking over loaded parts."""

    def __init__(self, lm: Step1LM, t2w: Token2Wav, max_batch: int, graphs: str, decoder_batch: int) -> None:
        cfg = EngineConfig()
        self.lm, self.t2w = lm, t2w
        runner = LLMRunner(lm, max_batch, cfg.max_total_tokens, decode=decode_function(lm, graphs, max_batch),
                           prefix_tokens=cfg.prefix_cache_tokens)
        scheduler = Scheduler(max_batch, cfg.max_queue, eos_id=lm.eos_id, prefix_cached=runner.prefix_lookup)
        self.loop = EngineLoop(runner, scheduler, sync_every=4 if lm.device.type == "cuda" else 1).start()
        self.decoder = DecoderWorker(t2w, max_batch=decoder_batch).start()  # the engine's decoder worker

    def submit(self, voice: Voice, k: int, tokens: int) -> GenerationRequest:
        prompt = voice.prompt(k)
        params = SamplingParams(max_new_tokens=tokens, seed=k, allowed_ids=AUDIO_IDS)
        return self.loop.submit(GenerationRequest(uuid.uuid4().hex, prompt, params,
                                                  prefix_len=system_turn_length(prompt)))

    def whole(self, voice: Voice, k: int, tokens: int) -> tuple[float, float, float]:
        """(audio s, LLM s, decode s) of one clone decoded whole."""
        start = time.perf_counter()
        ids = [i for chunk in self.submit(voice, k, tokens).tokens() for i in chunk]
        llm_s = time.perf_counter() - start
        samples, _ = self.decoder.synthesize(from_llm_ids(ids), voice.codec_ids, voice.mel, voice.speaker, seed=k)
        return samples.size / self.t2w.sample_rate, llm_s, time.perf_counter() - start - llm_s

    def streamed(self, voice: Voice, k: int, tokens: int) -> tuple[float, float, float]:
        """(audio s, first-audio s, total s) of one clone decoded while its ids are made."""
        start = time.perf_counter()
        request = self.submit(voice, k, tokens)
        first, samples = None, 0
        with self.decoder.stream(voice.codec_ids, voice.mel, voice.speaker, seed=k) as session:
            for chunk in request.tokens():
                pieces = session.push(from_llm_ids(chunk))
                if pieces and first is None:
                    first = time.perf_counter() - start
                samples += sum(p.size for p in pieces)
            samples += sum(p.size for p in session.finish())
        total = time.perf_counter() - start
        return samples / self.t2w.sample_rate, first or total, total

    def stop(self) -> None:
        self.loop.stop()
        self.decoder.stop()


def decode_steps(lm: Step1LM, graphs: str, batches: tuple[int, ...], prompt: int = 500, steps: int = 30) -> None:
    """ms per decode step at each batch, eager and (on CUDA) as graphs, over rows of ``prompt`` ids."""
    cache = lm.new_cache(max(batches), prompt + 64)
    for slot in range(max(batches)):
        lm.prefill(cache, slot, list(range(100, 100 + prompt)), 0)
    kinds = {"eager": lm.decode_step}
    if lm.device.type == "cuda" and graphs != "0":
        kinds["graphs"] = decode_function(lm, "1", max(batches))
    print(f"decode step (rows of {prompt} ids):")
    for name, step in kinds.items():
        for batch in batches:
            ids = torch.zeros(batch, dtype=torch.long, device=lm.device)
            positions = torch.tensor(cache.lengths[:batch], device=lm.device)
            for _ in range(3):
                step(cache, ids, positions, prompt + 1)
            sync(lm.device)
            start = time.perf_counter()
            for _ in range(steps):
                step(cache, ids, positions, prompt + 1)
            sync(lm.device)
            ms = (time.perf_counter() - start) / steps * 1000
            print(f"  {name:6} batch {batch:2d}: {ms:7.2f} ms/step {batch * 1000 / ms:8.0f} ids/s")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny dimensions (checks the code path on a CPU)")
    parser.add_argument("--root", help="an existing random root (else one is written to a temporary folder)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", help="the LLM's dtype (the decoder runs in float32)")
    parser.add_argument("--graphs", default="auto", choices=("auto", "0", "1"), help="EDITX_CUDA_GRAPHS")
    parser.add_argument("--voice-seconds", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=250, help="ids per answer (250 = 6 s of audio)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decoder-batch", type=int, default=EngineConfig().decoder_batch,
                        help="EDITX_DECODER_BATCH: decodes run as one flow + vocoder batch (1 = one at a time)")
    args = parser.parse_args()

    root = Path(args.root) if args.root else Path(tempfile.mkdtemp()) / "random-root"
    if not args.root:
        start = time.perf_counter()
        build_tiny_model_root(root, parts=("step1", "decoder"), official_size=not args.tiny)
        print(f"random root ({'tiny' if args.tiny else 'official size'}) written in {time.perf_counter() - start:.0f} s")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    lm = Step1LM.from_pretrained(root / LLM_DIR, device=device, dtype=dtype)
    t2w = Token2Wav(root / LLM_DIR / DECODER_DIR, device=device)
    print(f"loaded in {time.perf_counter() - start:.0f} s on {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), LLM {args.dtype}, "
          f"{sum(p.numel() for p in lm.model.parameters()) / 1e9:.2f} B parameters; torch {torch.__version__}")

    decode_steps(lm, args.graphs, (1, 8, 16))
    voice = Voice(args.voice_seconds)
    core = ServingCore(lm, t2w, max(16, args.clients), args.graphs, args.decoder_batch)
    try:
        print(f"prompt {len(voice.prompt(0))} ids (shared head {len(voice.head)}), {args.tokens} ids per answer "
              f"= {args.tokens / TOKENS_PER_SECOND:.1f} s of audio")
        core.whole(voice, 0, args.tokens)  # warm up: the head stored, graphs captured, kernels chosen
        core.streamed(voice, 0, args.tokens)
        whole = [core.whole(voice, 1 + k, args.tokens) for k in range(args.rounds)]
        rtf = statistics.median((llm + dec) / audio for audio, llm, dec in whole)
        llm_rtf = statistics.median(llm / audio for audio, llm, _ in whole)
        print(f"one whole clone at a time: RTF {rtf:.3f} (LLM {llm_rtf:.3f}, flow + vocoder {rtf - llm_rtf:.3f})")
        single = [core.streamed(voice, 10 + k, args.tokens) for k in range(args.rounds)]
        print(f"one streamed clone at a time: first audio {statistics.median(s[1] for s in single):.3f} s of "
              f"{statistics.median(s[2] for s in single):.2f} s")
        n = args.clients
        wall, results = at_once([lambda k=k: core.whole(voice, 100 + k, args.tokens) for k in range(n)])
        print(f"{n} whole clones at once: {sum(r[0] for r in results) / wall:.1f} s of audio per wall second "
              f"({wall:.2f} s)")
        wall, results = at_once([lambda k=k: core.streamed(voice, 200 + k, args.tokens) for k in range(n)])
        firsts = [r[1] for r in results]
        print(f"{n} streamed clones at once: {sum(r[0] for r in results) / wall:.1f} s of audio per wall second; "
              f"first audio p50 {percentile(firsts, 0.5):.3f} s, p95 {percentile(firsts, 0.95):.3f} s")
        stats = core.loop.scheduler.make_stats()
        print(f"scheduler: {stats.steps} steps, {stats.generated_tokens} ids, {stats.prefix_hits} heads copied")
        dec = core.decoder.stats()
        print(f"decoder worker (batch up to {dec.max_batch}): {dec.batches} batches, mean size "
              f"{dec.mean_batch_size:.2f}, mean {dec.mean_batch_seconds * 1000:.1f} ms per batch")
        if device.type == "cuda":
            print(f"GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB at most")
    finally:
        core.stop()


if __name__ == "__main__":
    main()
