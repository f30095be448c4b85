"""Per-token decode time of native Step1 at two context lengths.

With the incremental sqrt-ALiBi bias a decode step at position 2000 should cost
about what it costs at position 100 (attention over more keys is the only
growth); the reference remote code rebuilds a T×T bias in every layer at every
step, so its ratio grows with T. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_step1_decode.py                      # CPU, mid-size random model
    .venv/bin/python bench/bench_step1_decode.py --official-size --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import DynamicCache

from runners.models.step1 import OFFICIAL_CONFIG, Step1Config, Step1ForCausalLM

MID_SIZE = {
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_attention_heads": 8,
    "num_attention_groups": 2,
    "num_hidden_layers": 8,
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_random_model(official: bool, device: torch.device, dtype: torch.dtype) -> Step1ForCausalLM:
    """Random weights, created directly on the target device (no 7 GB detour through the CPU)."""
    sizes = OFFICIAL_CONFIG if official else {**OFFICIAL_CONFIG, **MID_SIZE}
    config = Step1Config(**sizes)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Step1ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02)
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def decode_ms_per_token(model: Step1ForCausalLM, position: int, steps: int, chunk: int) -> float:
    """Prefill ``position`` tokens, then time ``steps`` single-token steps; median ms per step."""
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    cache = DynamicCache()
    prompt = torch.randint(5, vocab, (1, position), device=device)
    for start in range(0, position, chunk):
        model(prompt[:, start : start + chunk], cache=cache, use_cache=True, logits_to_keep=1)
    token = torch.randint(5, vocab, (1, 1), device=device)
    times: list[float] = []
    for _ in range(steps + 2):  # the first two steps warm up kernels
        _sync(device)
        started = time.perf_counter()
        logits = model(token, cache=cache, use_cache=True).logits
        token = logits[:, -1:].argmax(-1)
        _sync(device)
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-size", action="store_true", help="3.5 B official dimensions (use a GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--positions", type=int, nargs="+", default=[100, 2000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prefill-chunk", type=int, default=512)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    model = build_random_model(args.official_size, device, dtype)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"Step1 random weights: {params:.0f} M params, {model.config.num_hidden_layers} layers, "
          f"hidden {model.config.hidden_size}, {device}, {dtype}, torch threads {torch.get_num_threads()}")
    results: dict[int, float] = {}
    for position in args.positions:
        results[position] = decode_ms_per_token(model, position, args.steps, args.prefill_chunk)
        print(f"  decode at position {position:>6}: {results[position]:8.2f} ms/token "
              f"({1000.0 / results[position]:7.1f} tokens/s)")
    if len(results) >= 2:
        first, last = args.positions[0], args.positions[-1]
        print(f"  ratio position {last} / position {first}: {results[last] / results[first]:.2f}x")


if __name__ == "__main__":
    main()
