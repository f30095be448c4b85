"""The engine's own Prometheus metrics, served by BentoML's ``/metrics`` beside its HTTP metrics.

- ``editx_queue_depth``, ``editx_batch_size`` (gauges): requests waiting for a slot, and in the last
  decode step. The queue depth is what a HorizontalPodAutoscaler scales on.
- ``editx_requests_aborted_total``, ``editx_generated_tokens_total`` (counters).
- ``editx_stage_seconds{stage=prepare|llm|flow|vocoder}``, ``editx_first_chunk_seconds`` (histograms).
- ``editx_decoder_batch_size``, ``editx_decoder_batch_seconds`` (histograms) and ``editx_decoder_queue_depth``
  (gauge): the decoder worker's batches (no labels).

Defined once per process (prometheus_client refuses a second definition); BentoML's worker runs
prometheus_client in multiprocess mode, so the gauges say how they combine across processes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from runners.events import EngineEvents

SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

QUEUE_DEPTH = Gauge("editx_queue_depth", "Generation requests waiting for a slot", multiprocess_mode="livesum")
BATCH_SIZE = Gauge("editx_batch_size", "Requests in the last LLM decode step", multiprocess_mode="livesum")
ABORTED = Counter("editx_requests_aborted", "Requests aborted because the client went away or cancelled")
TOKENS = Counter("editx_generated_tokens", "LLM ids generated")
STAGE_SECONDS = Histogram("editx_stage_seconds", "Seconds per request and stage", ["stage"],
                          buckets=SECONDS_BUCKETS)
FIRST_CHUNK_SECONDS = Histogram("editx_first_chunk_seconds", "Seconds from a streamed request to its first audio",
                                buckets=SECONDS_BUCKETS)
DECODER_BATCH_SIZE = Histogram("editx_decoder_batch_size", "Decode jobs (whole answers, stream chunks) per decoder batch",
                               buckets=(1, 2, 4, 8, 16, 32, 64))
DECODER_BATCH_SECONDS = Histogram("editx_decoder_batch_seconds", "Seconds per decoder batch (flow + vocoder)",
                                  buckets=SECONDS_BUCKETS)
DECODER_QUEUE_DEPTH = Gauge("editx_decoder_queue_depth", "Decode jobs waiting for the decoder worker",
                            multiprocess_mode="livesum")
STAGES = ("prepare", "llm", "flow", "vocoder")


class PrometheusEvents(EngineEvents):
    """Engine events as the metrics above."""

    def stage(self, name: str, seconds: float) -> None:
        if name in STAGES:  # a fixed label set: never one label value per request
            STAGE_SECONDS.labels(stage=name).observe(seconds)

    def first_chunk(self, seconds: float) -> None:
        FIRST_CHUNK_SECONDS.observe(seconds)

    def aborted(self) -> None:
        ABORTED.inc()

    def step(self, batch_size: int, queue_depth: int, new_tokens: int) -> None:
        BATCH_SIZE.set(batch_size)
        QUEUE_DEPTH.set(queue_depth)
        if new_tokens:
            TOKENS.inc(new_tokens)

    def decoder_batch(self, size: int, seconds: float, queue_depth: int) -> None:
        DECODER_BATCH_SIZE.observe(size)
        DECODER_BATCH_SECONDS.observe(seconds)
        DECODER_QUEUE_DEPTH.set(queue_depth)
