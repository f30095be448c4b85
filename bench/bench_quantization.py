"""LLM variants side by side: weight memory vs bf16, load time, decode tokens/s (batch 1 and 16).

A random Step1 is saved once as an ordinary checkpoint (bf16, the official file
names), its AWQ-4bit folder is written from it with compressed-tensors, and each
variant is then loaded from disk exactly as the engine loads it
(runners.quantization.load_step1). Memory is measured on the loaded modules:
the whole LLM, and the decoder layers' projections alone (what the variants
quantize; the embeddings and lm_head stay as they are). The ratio is to the same
model in bf16. The last column projects the whole-model ratio to the official
dimensions (3.5 B parameters, of which the embeddings and lm_head are 13 %),
from the measured ratio of the layers: a computed figure, not a measurement.

Decode: a ``--prompt``-token prefill, then ``--steps`` single-token steps with the KV
cache; tokens/s = batch / step time, for the fastest step and the median one, and per
second of the process's CPU time (on a shared CPU the steadiest). Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_quantization                   # CPU, mid-size random model
    .venv/bin/python -m bench.bench_quantization --official-size --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from runners.quantization import VARIANTS, load_step1, weight_memory
from runners.step1 import OFFICIAL_CONFIG, Step1Config, Step1ForCausalLM, expected_state_shapes

# Like bench_step1_decode's mid size, with an intermediate width that 128 divides (AWQ's group size).
MID_SIZE = {
    "hidden_size": 512,
    "intermediate_size": 1408,
    "num_attention_heads": 8,
    "num_attention_groups": 2,
    "num_hidden_layers": 8,
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def write_random_checkpoint(folder: Path, official: bool) -> Step1Config:
    """A random Step1 (norms 1, matrices N(0, 0.02²)) saved in bf16, as the official checkpoint is."""
    sizes = OFFICIAL_CONFIG if official else {**OFFICIAL_CONFIG, **MID_SIZE}
    config = Step1Config(**sizes)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = Step1ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    model.save_pretrained(str(folder))
    return config


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def decode_tokens_per_s(model: Step1ForCausalLM, batch: int, prompt: int, steps: int) -> tuple[float, float, float]:
    """Prefill ``prompt`` tokens per row, then time single-token steps.

    Returns tokens/s for the fastest step, the median step, and per second of this
    process's CPU time (all threads). On a shared machine other work stretches the
    wall clock but not the CPU time, so the last one is the steadiest on the CPU.
    """
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    cache = DynamicCache()
    ids = torch.randint(5, vocab, (batch, prompt), generator=gen).to(device)
    mask = torch.ones((batch, prompt), dtype=torch.long, device=device)
    logits = model(ids, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1).logits
    token = logits[:, -1:].argmax(-1)
    times: list[float] = []
    cpu: list[float] = []
    for _ in range(steps + 2):  # the first two steps warm up
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=1)
        _sync(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        logits = model(token, attention_mask=mask, cache=cache, use_cache=True).logits
        token = logits[:, -1:].argmax(-1)
        _sync(device)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return batch / min(times[2:]), batch / statistics.median(times[2:]), batch * steps / sum(cpu[2:])


def official_projection(layers_ratio: float, rest_ratio: float) -> float:
    """Whole-model ratio to bf16 at the official dimensions, from the layers' and the rest's ratios."""
    numel = {k: torch.Size(v).numel() for k, v in expected_state_shapes(OFFICIAL_CONFIG).items()}
    layers = sum(n for k, n in numel.items() if k.startswith("model.layers.") and "norm" not in k)
    rest = sum(numel.values()) - layers
    return (layers * layers_ratio + rest * rest_ratio) / (layers + rest)


def _layer_bytes(folder: Path) -> int:
    """Bytes the decoder layers' projections take in a checkpoint folder (packed weights, scales, zero points)."""
    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                if key.startswith("model.layers.") and "norm" not in key:
                    t = f.get_slice(key)
                    n = torch.Size(t.get_shape()).numel()
                    total += n * {"BF16": 2, "F16": 2, "F32": 4, "I32": 4, "I64": 8, "I8": 1, "U8": 1}[t.get_dtype()]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-size", action="store_true", help="3.5 B official dimensions (use a GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    if device.type != "cuda":
        print("No GPU here: CPU figures only (bitsandbytes' CPU kernels; GPU figures need --device cuda).")
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        base, awq = Path(tmp) / "base", Path(tmp) / "awq"
        config = write_random_checkpoint(base, args.official_size)
        if "awq" in args.variants:
            from runners.tiny.awq import write_awq_folder

            started = time.perf_counter()
            write_awq_folder(base, awq)
            print(f"AWQ-4bit folder written with compressed-tensors in {time.perf_counter() - started:.1f} s")
        disk = {name: sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20
                for name, folder in (("base", base), ("awq", awq)) if folder.is_dir()}
        disk_line = "checkpoint on disk: " + ", ".join(f"{k} {v:.1f} MiB" for k, v in disk.items())
        if awq.is_dir():
            layers_ratio = _layer_bytes(awq) / _layer_bytes(base)
            disk_line += (f"; the layers' projections in AWQ take {layers_ratio:.3f} of bf16, so the official "
                          f"AWQ folder is about {official_projection(layers_ratio, 1.0):.2f} of the bf16 one")
        params = sum(torch.Size(s).numel() for s in expected_state_shapes(config.to_dict()).values()) / 1e6
        print(f"Step1 random weights: {params:.0f} M params, {config.num_hidden_layers} layers, hidden "
              f"{config.hidden_size}, intermediate {config.intermediate_size}; LLM dtype {dtype}, {device}, "
              f"torch threads {torch.get_num_threads()}")
        print(disk_line)
        header = (f"{'variant':<8} {'load s':>7} {'whole MiB':>10} {'÷bf16':>6} {'layers MiB':>11} {'÷bf16':>6} "
                  f"{'official ÷bf16':>15}" + "".join(f" {'b' + str(b) + ' tok/s best/med/CPU-s':>26}" for b in args.batches))
        print(header)
        for variant in args.variants:
            folder = awq if variant == "awq" else base
            started = time.perf_counter()
            model = load_step1(folder, variant, device=device, dtype=dtype).eval()
            _sync(device)
            load_s = time.perf_counter() - started
            mem = weight_memory(model)
            rest_ratio = (mem.total_mb - mem.layers_mb) / (mem.bf16_total_mb - mem.bf16_layers_mb)
            speeds = [decode_tokens_per_s(model, b, args.prompt, args.steps) for b in args.batches]
            print(f"{variant:<8} {load_s:7.2f} {mem.total_mb:10.1f} {mem.total_vs_bf16:6.2f} {mem.layers_mb:11.1f} "
                  f"{mem.layers_vs_bf16:6.2f} {official_projection(mem.layers_vs_bf16, rest_ratio):15.2f}"
                  + "".join(f" {best:>10.1f} / {med:5.1f} / {per_cpu:5.1f}" for best, med, per_cpu in speeds))
            del model


if __name__ == "__main__":
    main()
