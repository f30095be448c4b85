"""Sampling audio tokens from Step1 the way the official demo does, batched.

Official call (UPSTREAM.md §2.2, transformers 4.53): ``generate(ids,
max_length=8192, temperature=0.7, do_sample=True,
logits_processor=[RepetitionAwareLogitsProcessor()])`` with no top_k / top_p
and no generation_config.json. transformers then fills the rest from
``GenerationConfig`` defaults: ``top_k=50`` (and ``top_p=1.0``, a no-op), with
the user's processor first, then temperature, then top-k. We apply exactly that
chain ourselves: repetition rule → /0.7 → keep the 50 best → softmax →
``torch.multinomial``. Sampling with a dedicated generator seeded like
``torch.manual_seed(seed)`` draws the same stream that ``generate`` draws from
the global generator, so for one prompt a seed reproduces ``model.generate``.

Our loop rather than ``generate``: per-prompt length budgets in a left-padded
batch, chunked prefill (the bias of a T-token chunk is T × keys, not T²), and
no dependence on transformers' changing generate plumbing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper

from runners.step1 import Step1ForCausalLM

OFFICIAL_MAX_LENGTH = 8192
OFFICIAL_TEMPERATURE = 0.7
DEFAULT_TOP_K = 50  # transformers' GenerationConfig default, in force upstream
REPETITION_WINDOW = 10
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

    @torch.inference_mode()
    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """Run the padded prompts through the model in chunks; returns last-position logits (fp32)."""
        logits: torch.Tensor | None = None
        step = max(1, self.prefill_chunk)
        for start in range(0, ids.shape[1], step):
            end = min(start + step, ids.shape[1])
            out = self.model(ids[:, start:end], attention_mask=mask[:, :end], cache=cache, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1, :]
        assert logits is not None
        return logits.float()

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

        ``allowed_ids`` optionally restricts what may be sampled (e.g. audio ids + EOS).

        ``max_length`` bounds prompt + output per prompt (official 8192);
        ``max_new_tokens`` optionally bounds the output further. A row that
        reaches EOS stops; nothing after its EOS is returned. ``temperature=0``
        means greedy. The same seed gives the same ids.
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
        budgets = [max_length - len(p) for p in prompts]
        if max_new_tokens is not None:
            if max_new_tokens < 1:
                raise ValueError("max_new_tokens must be at least 1")
            budgets = [min(b, max_new_tokens) for b in budgets]

        device = self.device
        longest = max(len(p) for p in prompts)
        batch = len(prompts)
        ids = torch.full((batch, longest), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((batch, longest), dtype=torch.long, device=device)
        for row, prompt in enumerate(prompts):
            ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long, device=device)
            mask[row, longest - len(prompt) :] = 1

        generator: torch.Generator | None = None
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
        greedy = temperature <= 0
        chain = self.logits_processors(1.0 if greedy else temperature, allowed_ids)

        cache = DynamicCache()
        logits = self._prefill(ids, mask, cache)
        outputs: list[list[int]] = [[] for _ in prompts]
        running = torch.ones(batch, dtype=torch.bool, device=device)
        budget = torch.tensor(budgets, device=device)
        # What the processors see: prompts + generated ids. Padding reads as -1 so the
        # repetition rule never counts it (generate() would count pad id 0).
        history = ids.masked_fill(mask == 0, -1)
        for step in range(max(budgets)):
            scores = chain(history, logits)
            if greedy:
                next_ids = scores.argmax(dim=-1)
            else:
                probs = torch.softmax(scores, dim=-1)
                next_ids = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
            next_ids = torch.where(running, next_ids, torch.full_like(next_ids, self.pad_id))
            for row in torch.nonzero(running, as_tuple=True)[0].tolist():
                token = int(next_ids[row])
                if token == self.eos_id:
                    running[row] = False
                else:
                    outputs[row].append(token)
            running &= budget > step + 1
            if not bool(running.any()):
                break
            history = torch.cat([history, next_ids[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=1)
            out = self.model(next_ids[:, None], attention_mask=mask, cache=cache, use_cache=True)
            logits = out.logits[:, -1, :].float()
        return outputs
