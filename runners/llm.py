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
generate plumbing. The HF-style processors below stay for ``model.generate`` users.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper

from runners.kv_cache import SlotKVCache, decode_bias
from runners.sampling import DEFAULT_TOP_K, OFFICIAL_TEMPERATURE, REPETITION_WINDOW, SamplingParams, SlotSampler
from runners.step1 import Step1ForCausalLM

OFFICIAL_MAX_LENGTH = 8192
REPETITION_THRESHOLD = 0.1


class RepetitionAwareLogitsProcessor(LogitsProcessor):
    """Forbid the last id for one step when it already fills more than 10 % of the last 10 ids.

    The window includes the prompt, and the rule is off until at least 10 ids exist.
    """

    def __init__(self, window: int = REPETITION_WINDOW, threshold: float = REPETITION_THRESHOLD) -> None:
        self.window = window
        self.threshold = threshold

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] < self.window:
            return scores
        recent = input_ids[:, -self.window :]
        last = recent[:, -1]
        share = (recent == last[:, None]).sum(dim=1).float() / self.window
        rows = torch.nonzero(share > self.threshold, as_tuple=True)[0]
        if rows.numel():
            scores[rows, last[rows]] = float("-inf")
        return scores


class AllowedIdsLogitsProcessor(LogitsProcessor):
    """Keep only the given ids (e.g. the audio tokens and EOS); every other logit becomes -inf."""

    def __init__(self, allowed: torch.Tensor) -> None:
        self.allowed = allowed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        keep = torch.full_like(scores, float("-inf"))
        idx = self.allowed.to(scores.device)
        keep[:, idx] = scores[:, idx]
        return keep


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

    def logits_processors(self, temperature: float, allowed_ids: torch.Tensor | None = None) -> LogitsProcessorList:
        """The official chain: repetition rule, then temperature, then top-k 50 (see module doc).

        ``allowed_ids`` (not official) first restricts sampling to those ids.
        """
        chain = LogitsProcessorList([RepetitionAwareLogitsProcessor()])
        if allowed_ids is not None:
            chain.insert(0, AllowedIdsLogitsProcessor(allowed_ids))
        if temperature != 1.0:
            chain.append(TemperatureLogitsWarper(temperature))
        chain.append(TopKLogitsWarper(DEFAULT_TOP_K))
        return chain

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

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[list[int]],
        *,
        max_length: int = OFFICIAL_MAX_LENGTH,
        temperature: float = OFFICIAL_TEMPERATURE,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        allowed_ids: torch.Tensor | None = None,
    ) -> list[list[int]]:
        """Sample a continuation per prompt; returns the new ids without the final EOS.

        A loop over :meth:`prefill` and :meth:`decode_step` (what the scheduler runs, one
        request per slot). ``allowed_ids`` optionally restricts what may be sampled;
        ``max_length`` bounds prompt + output per prompt (official 8192);
        ``max_new_tokens`` optionally bounds the output further. A row that reaches EOS
        stops; nothing after its EOS is returned. ``temperature=0`` means greedy. Every
        row draws from its own generator seeded with ``seed``, so a prompt gives the same
        ids alone or in any batch.
        """
        if not prompts:
            return []
        for n, prompt in enumerate(prompts):
            if not prompt:
                raise ValueError(f"prompt {n} is empty")
            if len(prompt) >= max_length:
                raise ValueError(
                    f"prompt {n} has {len(prompt)} tokens; max_length {max_length} (prompt + output) leaves no room"
                )
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        budgets = [max_length - len(p) for p in prompts]
        if max_new_tokens is not None:
            budgets = [min(b, max_new_tokens) for b in budgets]

        batch = len(prompts)
        device = self.device
        cache = self.new_cache(batch, max(len(p) + b for p, b in zip(prompts, budgets)))
        sampler = self.new_sampler(batch)
        first: list[torch.Tensor] = []
        for slot, prompt in enumerate(prompts):
            params = SamplingParams(max_new_tokens=budgets[slot], temperature=temperature, seed=seed,
                                    allowed_ids=allowed_ids)
            sampler.start(slot, prompt, params)
            logits = self.prefill(cache, slot, prompt, 0)
            first.append(sampler.sample([slot], logits))
        next_ids = torch.cat(first)
        slots = list(range(batch))
        outputs: list[list[int]] = [[] for _ in prompts]
        running = [True] * batch
        for step in range(max(budgets)):
            for row, token in enumerate(next_ids.tolist()):
                if not running[row]:
                    continue
                if token == self.eos_id:
                    running[row] = False
                else:
                    outputs[row].append(token)
                    running[row] = len(outputs[row]) < budgets[row]
            if not any(running):
                break
            positions = torch.tensor(cache.lengths, dtype=torch.long, device=device)
            logits = self.decode_step(cache, next_ids, positions, max(cache.lengths) + 1)
            for slot in slots:
                cache.lengths[slot] += 1
            next_ids = sampler.sample(slots, logits)
        return outputs
