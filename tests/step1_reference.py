"""Reference pieces the Step1 tests check the serving path against (not used by the service).

- :func:`generate`: a plain loop over ``Step1LM.prefill`` / ``decode_step`` with one request per
  slot, the shape of the official ``generate`` call, to compare with transformers' own
  ``model.generate`` and with the recorded upstream ids.
- :class:`RepetitionAwareLogitsProcessor`: the official repetition rule in transformers'
  processor form, to check :mod:`runners.sampling` against.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from runners.llm import Step1LM
from runners.sampling import OFFICIAL_TEMPERATURE, REPETITION_WINDOW, SamplingParams

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


@torch.inference_mode()
def generate(
lm: Step1LM,
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
    device = lm.device
    cache = lm.new_cache(batch, max(len(p) + b for p, b in zip(prompts, budgets)))
    sampler = lm.new_sampler(batch)
    first: list[torch.Tensor] = []
    for slot, prompt in enumerate(prompts):
        params = SamplingParams(max_new_tokens=budgets[slot], temperature=temperature, seed=seed,
                                allowed_ids=allowed_ids)
        sampler.start(slot, prompt, params)
        logits = lm.prefill(cache, slot, prompt, 0)
        first.append(sampler.sample([slot], logits))
    next_ids = torch.cat(first)
    slots = list(range(batch))
    outputs: list[list[int]] = [[] for _ in prompts]
    running = [True] * batch
    for step in range(max(budgets)):
        for row, token in enumerate(next_ids.tolist()):
            if not running[row]:
                continue
            if token == lm.eos_id:
                running[row] = False
            else:
                outputs[row].append(token)
                running[row] = len(outputs[row]) < budgets[row]
        if not any(running):
            break
        positions = torch.tensor(cache.lengths, dtype=torch.long, device=device)
        logits = lm.decode_step(cache, next_ids, positions, max(cache.lengths) + 1)
        for slot in slots:
            cache.lengths[slot] += 1
        next_ids = sampler.sample(slots, logits)
    return outputs
