"""Step1 as the serving core drives it: prefill a request into a cache slot, then batched decode steps.

The official demo calls transformers' ``generate(ids, max_length=8192,
temperature=0.7, do_sample=True)`` with the model's repetition processor and no
top_k / top_p, so transformers' GenerationConfig default ``top_k=50`` is in force.
The chain is applied by :mod:`runners.sampling` per row: repetition rule → /0.7 →
keep the 50 best → softmax → ``torch.multinomial`` with a generator seeded like
``torch.manual_seed(seed)``, so for one prompt a seed reproduces ``model.generate``.

Our loop rather than ``generate``: per-request budgets, requests joining and
leaving between steps, chunked prefill (the bias of a T-token chunk is T × keys,
not T²), a preallocated cache, and no dependence on transformers' changing
generate plumbing. (The tests keep a plain generate loop and transformers' own processor
form of the repetition rule, in tests/step1_reference.py, to check this against.)
"""

from __future__ import annotations

from pathlib import Path

import torch

from runners.kv_cache import SlotKVCache, decode_bias
from runners.sampling import SlotSampler
from runners.step1 import Step1ForCausalLM



def _dtype_of(name: torch.dtype | str) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(table)}")
    return table[name]


class Step1LM:
    """Step1 loaded from the official ``Step-Audio-EditX`` folder, with the official sampling rule."""

    def __init__(self, model: Step1ForCausalLM, *, prefill_chunk: int = 1024) -> None:
        self.model = model.eval()
        self.eos_id = int(model.config.eos_token_id)
        self.pad_id = int(model.config.pad_token_id if model.config.pad_token_id is not None else 0)
        self.prefill_chunk = prefill_chunk

    @classmethod
    def from_pretrained(
        cls,
        llm_dir: Path | str,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str = torch.bfloat16,
        prefill_chunk: int = 1024,
        quantization: str = "none",
    ) -> "Step1LM":
        """Load config.json + safetensors from a local folder; never reaches a hub.

        ``quantization`` is a variant of runners.quantization (int8, nf4, awq); the
        quantized layers are ordinary modules of the model, so decoding is unchanged.
        """
        from runners.quantization import load_step1, parse_quantization

        model = load_step1(llm_dir, parse_quantization(quantization), device=device, dtype=_dtype_of(dtype))
        return cls(model, prefill_chunk=prefill_chunk)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------ serving verbs
    def new_cache(self, slots: int, max_len: int) -> SlotKVCache:
        """A preallocated K/V cache for ``slots`` requests of up to ``max_len`` tokens each."""
        return SlotKVCache(self.model.config, slots, max_len, dtype=self.model.dtype, device=self.device)

    def new_sampler(self, slots: int) -> SlotSampler:
        return SlotSampler(slots, int(self.model.config.vocab_size), self.device)

    @torch.inference_mode()
    def prefill(self, cache: SlotKVCache, slot: int, ids: list[int], start: int) -> torch.Tensor:
        """Run prompt tokens ``ids`` (positions ``start..``) of the request in ``slot``; last logits (1, V) fp32.

        Long chunks are cut at ``prefill_chunk`` tokens, so the bias of one forward is
        at most chunk × keys, never the prompt length squared.
        """
        if start == 0:
            cache.reset(slot)
        device = self.device
        logits: torch.Tensor | None = None
        step = max(1, self.prefill_chunk)
        for offset in range(0, len(ids), step):
            chunk = torch.tensor([ids[offset : offset + step]], dtype=torch.long, device=device)
            view = cache.prefill_view(slot, start + offset)
            out = self.model(chunk, cache=view, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1, :]
        assert logits is not None, "prefill needs at least one token"
        return logits.float()

    @torch.inference_mode()
    def decode_step(self, cache: SlotKVCache, input_ids: torch.Tensor, positions: torch.Tensor,
                    key_len: int) -> torch.Tensor:
        """One token for each of the slots 0..rows-1 together; logits (rows, V) fp32.

        ``positions[r]`` is where row r's token goes (its length so far); ``key_len`` must
        exceed every position. Rows of free slots may carry any token at position 0.
        """
        rows = input_ids.shape[0]
        slopes = self.model.model.slopes_on(input_ids.device)
        bias = decode_bias(slopes, positions, key_len, self.model.dtype)
        view = cache.decode_view(rows, positions, key_len)
        out = self.model(input_ids[:, None], cache=view, use_cache=True, attention_bias=bias)
        return out.logits[:, -1, :].float()
