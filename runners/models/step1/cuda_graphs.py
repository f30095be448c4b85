"""CUDA-graph replay of the batched decode step, per batch-size and key-length bucket.

A decode step of a 3B model at batch 1–16 launches hundreds of small kernels; on a
GPU their launch cost is a large part of the step. A graph captured once per
(rows, keys) bucket replays them in one launch. Rows are padded up to the bucket
with free slots (whose throw-away keys are overwritten before they are read) and
keys up to the bucket length (keys past a row's position are masked by the bias),
so a bucket's graph serves every batch that fits in it.

``EDITX_CUDA_GRAPHS``: ``auto`` (on CUDA devices) | ``1`` | ``0``. Every graph is
checked against the eager step on its first replay; if they disagree, graphs are
turned off for the process with a warning and the eager step is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from runners.models.step1.kv_cache import SlotKVCache

log = logging.getLogger("editx.cuda_graphs")

DecodeFn = Callable[[SlotKVCache, torch.Tensor, torch.Tensor, int], torch.Tensor]
MIN_KEY_BUCKET = 256


def buckets(limit: int, start: int = 1) -> list[int]:
    """Powers of two from ``start`` below ``limit``, then ``limit`` itself."""
    out, size = [], start
    while size < limit:
        out.append(size)
        size *= 2
    return out + [limit]


def decode_function(lm, mode: str, slots: int) -> DecodeFn:  # noqa: ANN001 - runners.models.step1.llm.Step1LM
    """The decode step to run: graph replay where asked for and possible, else the eager step."""
    on_cuda = lm.device.type == "cuda"
    if mode == "0" or (mode == "auto" and not on_cuda):
        return lm.decode_step
    if not on_cuda:
        log.warning("EDITX_CUDA_GRAPHS=1 but the LLM is on %s: decoding without graphs", lm.device)
        return lm.decode_step
    return GraphDecoder(lm, slots)


class GraphDecoder:
    """Callable like ``Step1LM.decode_step``; captures a graph per bucket on first use."""

    def __init__(self, lm, slots: int) -> None:  # noqa: ANN001
        self.lm = lm
        self.row_buckets = buckets(slots)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.enabled = True

    def __call__(self, cache: SlotKVCache, input_ids: torch.Tensor, positions: torch.Tensor,
                 key_len: int) -> torch.Tensor:
        if not self.enabled:
            return self.lm.decode_step(cache, input_ids, positions, key_len)
        rows = input_ids.shape[0]
        row_bucket = next(b for b in self.row_buckets if b >= rows)
        key_bucket = next(b for b in buckets(cache.max_len, MIN_KEY_BUCKET) if b >= key_len)
        pad = [min(cache.lengths[r], cache.max_len - 1) for r in range(rows, row_bucket)]
        ids = torch.cat([input_ids, input_ids.new_zeros(row_bucket - rows)])
        pos = torch.cat([positions, torch.tensor(pad, dtype=positions.dtype, device=positions.device)])
        key = (row_bucket, key_bucket)
        fresh = key not in self.graphs
        if fresh:
            try:
                self.graphs[key] = self._capture(cache, row_bucket, key_bucket)
            except Exception as exc:  # capture is an optimisation: never fail a request for it
                log.warning("CUDA graph capture failed (%s); decoding without graphs", exc)
                self.enabled = False
                return self.lm.decode_step(cache, input_ids, positions, key_len)
        graph, static_ids, static_pos, static_out = self.graphs[key]
        static_ids.copy_(ids)
        static_pos.copy_(pos)
        graph.replay()
        logits = static_out[:rows]
        if fresh:
            eager = self.lm.decode_step(cache, ids, pos, key_bucket)[:rows]
            if not torch.allclose(logits, eager, rtol=1e-2, atol=1e-2):
                log.warning("CUDA graph replay disagrees with the eager decode step; decoding without graphs")
                self.enabled = False
                return eager.clone()
        return logits.clone()

    def _capture(self, cache: SlotKVCache, rows: int, key_len: int):  # noqa: ANN202
        device = self.lm.device
        static_ids = torch.zeros(rows, dtype=torch.long, device=device)
        static_pos = torch.tensor([min(cache.lengths[r], cache.max_len - 1) for r in range(rows)],
                                  dtype=torch.long, device=device)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm up kernels and allocator outside the capture
                self.lm.decode_step(cache, static_ids, static_pos, key_len)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self.lm.decode_step(cache, static_ids, static_pos, key_len)
        log.info("captured a CUDA graph for the decode step: %d rows, %d keys", rows, key_len)
        return graph, static_ids, static_pos, static_out
