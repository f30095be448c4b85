"""A key/value cache allocated once, with one fixed row ("slot") per running request.

Continuous batching needs requests to join and leave a running batch between two
decode steps. With one preallocated tensor per layer, joining is "prefill into a
free slot" and leaving is "forget the slot": nothing is concatenated, copied or
reallocated per token, and the shapes a decode step sees depend only on the batch
and length buckets (what CUDA graphs need).

Layout per layer: (slots, kv_groups, max_len, head_dim); a slot's keys sit at
positions 0..length-1, left-aligned, so the sqrt-ALiBi distance of query row i and
key j is simply i - j.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from runners.models.step1.configuration import Step1Config


class SlotKVCache:
    """The K/V tensors of every layer for ``slots`` requests of at most ``max_len`` tokens each."""

    def __init__(self, config: Step1Config, slots: int, max_len: int, *, dtype: torch.dtype,
                 device: torch.device) -> None:
        shape = (config.num_hidden_layers, slots, config.num_attention_groups, max_len, config.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.slots = slots
        self.max_len = max_len
        self.lengths = [0] * slots  # host copy: tokens held per slot

    @property
    def nbytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()

    def reset(self, slot: int) -> None:
        self.lengths[slot] = 0

    def prefill_view(self, slot: int, start: int) -> "PrefillView":
        """The cache as one request's prefill of tokens ``start..`` sees it."""
        if start != self.lengths[slot]:
            raise ValueError(f"slot {slot} holds {self.lengths[slot]} tokens; cannot prefill from {start}")
        return PrefillView(self, slot, start)

    def decode_view(self, rows: int, positions: torch.Tensor, key_len: int) -> "DecodeView":
        """The cache as one decode step over slots 0..rows-1 sees it (new token of row r at positions[r])."""
        return DecodeView(self, rows, positions, key_len)


class PrefillView:
    """Cache protocol (``update`` / ``get_seq_length``) for a chunk of one request's prompt."""

    def __init__(self, cache: SlotKVCache, slot: int, start: int) -> None:
        self.cache, self.slot, self.start = cache, slot, start

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.start

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: object, **kwargs: object):
        """Write the chunk's K/V (1, G, T, D) at the slot's next positions; return all of the slot's K/V."""
        end = self.start + key.shape[2]
        if end > self.cache.max_len:
            raise ValueError(f"the prompt needs {end} cache positions; the cache holds {self.cache.max_len}")
        keys, values = self.cache.keys[layer_idx], self.cache.values[layer_idx]
        keys[self.slot, :, self.start:end] = key[0]
        values[self.slot, :, self.start:end] = value[0]
        if layer_idx == self.cache.keys.shape[0] - 1:
            self.cache.lengths[self.slot] = end
        return keys[self.slot:self.slot + 1, :, :end], values[self.slot:self.slot + 1, :, :end]


class DecodeView:
    """Cache protocol for one token per slot 0..rows-1, each written at its own position."""

    def __init__(self, cache: SlotKVCache, rows: int, positions: torch.Tensor, key_len: int) -> None:
        self.cache, self.rows, self.positions, self.key_len = cache, rows, positions, key_len
        self.row_index = torch.arange(rows, device=positions.device)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.key_len - 1

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: object, **kwargs: object):
        """Write each row's K/V (rows, G, 1, D) at its position; return K/V of keys 0..key_len-1."""
        keys, values = self.cache.keys[layer_idx], self.cache.values[layer_idx]
        keys[self.row_index, :, self.positions] = key[:, :, 0]
        values[self.row_index, :, self.positions] = value[:, :, 0]
        return keys[: self.rows, :, : self.key_len], values[: self.rows, :, : self.key_len]


def decode_bias(slopes: torch.Tensor, positions: torch.Tensor, key_len: int, dtype: torch.dtype) -> torch.Tensor:
    """sqrt-ALiBi bias (rows, H, 1, key_len) for one query per row at ``positions``; later keys are -inf.

    Same arithmetic, in the same order, as the single-sequence bias, so a row gives the
    logits it would give alone.
    """
    keys = torch.arange(key_len, device=positions.device)
    distance = positions[:, None] - keys[None, :]  # (rows, key_len)
    future = distance < 0
    bias = -torch.sqrt(distance.clamp(min=0).to(torch.float32))
    bias = bias[:, None, :] * slopes[None, :, None]  # (rows, H, key_len)
    bias = bias.masked_fill(future[:, None, :], float("-inf"))
    return bias[:, :, None, :].to(dtype)


class PrefixStore:
    """K/V of prompt heads that many requests share (a voice's clone system turn, the edit persona).

    A head's keys and values depend only on its own ids (the model has no rotary positions and
    the head starts every prompt at position 0), so a copy serves any later prompt with the same
    head exactly. Entries are kept least-recently-used first out, bounded by ``max_tokens`` in all,
    on the cache's device.
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._entries: OrderedDict[bytes, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.tokens = 0
        self._token_bytes = 0  # K and V of one position in every layer

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Memory held (read from any thread: no iteration over the entries)."""
        return self.tokens * self._token_bytes

    def put(self, key: bytes, cache: SlotKVCache, slot: int, length: int) -> None:
        """Keep a copy of the first ``length`` positions of ``slot`` (no-op when held or too long)."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        if length > self.max_tokens or length > cache.lengths[slot]:
            return
        while self.tokens + length > self.max_tokens:
            _, (old, _) = self._entries.popitem(last=False)
            self.tokens -= old.shape[2]
        keys = cache.keys[:, slot, :, :length].clone()
        values = cache.values[:, slot, :, :length].clone()
        self._entries[key] = (keys, values)
        self.tokens += length
        self._token_bytes = 2 * keys[:, :, :1].numel() * keys.element_size()

    def restore(self, key: bytes, cache: SlotKVCache, slot: int) -> int:
        """Write the stored head into ``slot`` (which then holds exactly it); its length."""
        keys, values = self._entries[key]
        self._entries.move_to_end(key)
        length = keys.shape[2]
        cache.keys[:, slot, :, :length] = keys
        cache.values[:, slot, :, :length] = values
        cache.lengths[slot] = length
        return length
