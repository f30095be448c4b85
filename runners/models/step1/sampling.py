"""The sampling rule of Step-Audio-EditX, applied per row of a batch that changes every step.

The official rule (transformers' ``generate`` with the model's repetition processor
and the GenerationConfig defaults in force there) is, in this order:
repetition rule → temperature 0.7 → keep the 50 best → softmax → multinomial.
The repetition rule forbids the last id for one step when it already fills more
than 10 % of the last 10 ids (prompt included; off until 10 ids exist).

Every row keeps its own generator, window and allowed ids, so a seeded request
draws the same ids alone or beside any other requests: batching never changes a
result. Nothing here reads a value back to the host, so a decode step on a GPU
never waits for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

OFFICIAL_TEMPERATURE = 0.7
DEFAULT_TOP_K = 50  # transformers' GenerationConfig default, in force upstream
REPETITION_WINDOW = 10
REPETITION_MIN_COUNT = 2  # "more than 10 % of the last 10 ids": the last id seen at least twice


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples. ``temperature <= 0`` means greedy."""

    max_new_tokens: int
    temperature: float = OFFICIAL_TEMPERATURE
    seed: int | None = None
    allowed_ids: torch.Tensor | None = None  # 1-D ids that may be sampled (e.g. audio ids + EOS); None = all
    top_k: int = DEFAULT_TOP_K

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")


class SlotSampler:
    """Per-slot sampling state (window of recent ids, allowed ids, generator) for up to ``slots`` rows."""

    def __init__(self, slots: int, vocab_size: int, device: torch.device) -> None:
        self.device = device
        self.vocab_size = vocab_size
        self.window = torch.full((slots, REPETITION_WINDOW), -1, dtype=torch.long, device=device)
        self.seen = torch.zeros(slots, dtype=torch.long, device=device)  # ids so far, capped at the window
        self.allowed = torch.ones((slots, vocab_size), dtype=torch.bool, device=device)
        self.restricted = [False] * slots
        self.allowed_ids: list[torch.Tensor | None] = [None] * slots  # sorted ids, for the compact path
        self.temperature = [OFFICIAL_TEMPERATURE] * slots
        self.top_k = [DEFAULT_TOP_K] * slots
        self.generators: list[torch.Generator | None] = [None] * slots

    def start(self, slot: int, prompt_ids: list[int], params: SamplingParams) -> None:
        """Make ``slot`` sample for a new request whose prompt is ``prompt_ids``."""
        recent = prompt_ids[-REPETITION_WINDOW:]
        row = torch.full((REPETITION_WINDOW,), -1, dtype=torch.long)
        row[REPETITION_WINDOW - len(recent):] = torch.tensor(recent, dtype=torch.long)
        self.window[slot] = row.to(self.device)
        self.seen[slot] = min(len(prompt_ids), REPETITION_WINDOW)
        if params.allowed_ids is not None:
            mask = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
            mask[params.allowed_ids.to(self.device)] = True
            self.allowed[slot] = mask
            self.restricted[slot] = True
            self.allowed_ids[slot] = torch.nonzero(mask).squeeze(1)
        elif self.restricted[slot]:
            self.allowed[slot] = True
            self.restricted[slot] = False
            self.allowed_ids[slot] = None
        self.temperature[slot] = params.temperature
        self.top_k[slot] = min(params.top_k, self.vocab_size)
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        self.generators[slot] = torch.Generator(device=self.device).manual_seed(seed)

    def sample(self, slots: list[int], logits: torch.Tensor) -> torch.Tensor:
        """One id per row of ``logits`` (rows, vocab) for the given slots; updates their windows."""
        index = torch.tensor(slots, dtype=torch.long, device=self.device)
        scores = logits.float()
        compact = self._shared_allowed(slots)
        if compact is None and any(self.restricted[s] for s in slots):
            scores = scores.masked_fill(~self.allowed.index_select(0, index), float("-inf"))
        scores = self._apply_repetition_rule(index, scores)
        if compact is not None:
            # Every row may only say the same few ids (e.g. audio ids + EOS): sample among those
            # alone; the others would get probability 0 anyway.
            scores = scores.index_select(1, compact)
        # Temperature and top-k for all rows at once (row-wise kernels: a row's numbers do not
        # depend on its neighbours); only the draw needs each row's own generator.
        temperatures = [self.temperature[s] for s in slots]
        if any(t > 0 and t != 1.0 for t in temperatures):
            divisor = torch.tensor([[t if t > 0 else 1.0] for t in temperatures], dtype=scores.dtype,
                                   device=scores.device)
            scores = scores / divisor
        top_k = min(max(self.top_k[s] for s in slots), scores.shape[1])
        kth_values = torch.topk(scores, top_k, dim=-1)[0]
        ks = torch.tensor([min(self.top_k[s], top_k) - 1 for s in slots], device=scores.device)
        kth = kth_values.gather(1, ks[:, None])
        scores = scores.masked_fill(scores < kth, float("-inf"))
        greedy = [t <= 0 for t in temperatures]
        probs = torch.softmax(scores, dim=-1) if not all(greedy) else scores
        out: list[torch.Tensor] = []
        for row, slot in enumerate(slots):
            if greedy[row]:
                out.append(scores[row : row + 1].argmax(dim=-1))
            else:
                out.append(torch.multinomial(probs[row : row + 1], num_samples=1,
                                             generator=self.generators[slot]).squeeze(1))
        next_ids = torch.cat(out)
        if compact is not None:
            next_ids = compact[next_ids]
        self.observe(index, next_ids)
        return next_ids

    def _shared_allowed(self, slots: list[int]) -> torch.Tensor | None:
        """The allowed ids when every row has the same restriction, else None."""
        first = self.allowed_ids[slots[0]]
        if first is None:
            return None
        for slot in slots[1:]:
            other = self.allowed_ids[slot]
            if other is None or (other is not first and not torch.equal(other, first)):
                return None
        return first

    def _apply_repetition_rule(self, index: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        window = self.window.index_select(0, index)
        last = window[:, -1]
        repeats = (window == last[:, None]).sum(dim=1)
        block = (repeats >= REPETITION_MIN_COUNT) & (self.seen.index_select(0, index) >= REPETITION_WINDOW)
        current = scores.gather(1, last.clamp(min=0)[:, None])
        blocked = torch.where(block[:, None], torch.full_like(current, float("-inf")), current)
        return scores.scatter(1, last.clamp(min=0)[:, None], blocked)

    def observe(self, index: torch.Tensor, next_ids: torch.Tensor) -> None:
        """Shift the sampled ids into the windows of the slots in ``index``."""
        window = self.window.index_select(0, index)
        self.window.index_copy_(0, index, torch.cat([window[:, 1:], next_ids[:, None]], dim=1))
        self.seen.index_copy_(0, index, (self.seen.index_select(0, index) + 1).clamp(max=REPETITION_WINDOW))
