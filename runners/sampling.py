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
        elif self.restricted[slot]:
            self.allowed[slot] = True
            self.restricted[slot] = False
        self.temperature[slot] = params.temperature
        self.top_k[slot] = min(params.top_k, self.vocab_size)
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        self.generators[slot] = torch.Generator(device=self.device).manual_seed(seed)

    def sample(self, slots: list[int], logits: torch.Tensor) -> torch.Tensor:
        """One id per row of ``logits`` (rows, vocab) for the given slots; updates their windows."""
        index = torch.tensor(slots, dtype=torch.long, device=self.device)
        scores = logits.float()
        if any(self.restricted[s] for s in slots):
            scores = scores.masked_fill(~self.allowed.index_select(0, index), float("-inf"))
        scores = self._apply_repetition_rule(index, scores)
        out: list[torch.Tensor] = []
        for row, slot in enumerate(slots):
            row_scores = scores[row : row + 1]
            temperature = self.temperature[slot]
            if temperature > 0 and temperature != 1.0:
                row_scores = row_scores / temperature
            kth = torch.topk(row_scores, self.top_k[slot])[0][..., -1, None]
            row_scores = row_scores.masked_fill(row_scores < kth, float("-inf"))
            if temperature <= 0:
                out.append(row_scores.argmax(dim=-1))
            else:
                probs = torch.softmax(row_scores, dim=-1)
                out.append(torch.multinomial(probs, num_samples=1, generator=self.generators[slot]).squeeze(1))
        next_ids = torch.cat(out)
        self.observe(index, next_ids)
        return next_ids

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
