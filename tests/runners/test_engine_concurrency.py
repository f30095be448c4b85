"""The engine serving many requests at once through its scheduler (tiny model, CPU)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from runners.config import EngineConfig
from runners.engine import EditXEngine
from runners.errors import QueueFullError, RequestAbortedError
from runners.prompts import EOT_ID
from tests.concurrency import race
from tests.test_engine import voice
from tests.test_streaming import _band_distance

TEXTS = [f"Sentence number {k} for the batch." for k in range(8)]


@pytest.fixture(scope="module")
def engine(tiny_root: Path) -> EditXEngine:
    engine = EditXEngine(EngineConfig(model_path=str(tiny_root), max_new_tokens=40, cache_dir="")).load()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def long_engine(tiny_root: Path) -> EditXEngine:
    """Answers of up to 3,000 ids (the tiny model never says EOS): time to cancel them."""
    engine = EditXEngine(EngineConfig(model_path=str(tiny_root), max_new_tokens=3000, cache_dir="")).load()
    yield engine
    engine.close()


def test_eight_concurrent_clones_each_equal_their_seed_alone(engine: EditXEngine) -> None:
    prompt = voice()
    # "alone" runs in a thread of its own too: torch's intra-op thread count is per thread (a new
    # thread gets the default), and the last bits of the decoder's sums follow it
    alone = [race(lambda _, k=k: engine.clone(prompt, "a prompt", TEXTS[k], seed=k), 1)[0] for k in range(8)]
    steps_before = engine.scheduler_stats().steps
    together = race(lambda k: engine.clone(prompt, "a prompt", TEXTS[k], seed=k), 8)
    for k in range(8):
        assert not isinstance(together[k], BaseException), together[k]
        assert together[k].generated_tokens == alone[k].generated_tokens  # the LLM's ids: exactly equal
        # the decoder worker ran them as one batch: equal up to the float rounding its batched kernels add
        # (tests/runners/test_decoder_worker.py measures it: max |Δ| ≈ 7e-5 on peaks of 0.05)
        np.testing.assert_allclose(together[k].samples, alone[k].samples, rtol=0, atol=3e-4)
    stats = engine.scheduler_stats()
    # 8 × 40 ids in far fewer steps than 320: they were decoded together
    assert stats.steps - steps_before < 8 * 40 * 0.5


def test_a_cancelled_clone_is_aborted_and_nothing_more_is_made(long_engine: EditXEngine) -> None:
    engine = long_engine
    cancel = threading.Event()
    aborted_before = engine.scheduler_stats().aborted
    errors: list[BaseException] = []

    def run() -> None:
        try:
            engine.clone(voice(seconds=2.5), "a prompt", "This one is cancelled.", seed=1, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while engine.scheduler_stats().generated_tokens < 20 and time.monotonic() < deadline:
        time.sleep(0.005)
    cancel.set()
    worker.join(30)
    assert errors and isinstance(errors[0], RequestAbortedError)
    deadline = time.monotonic() + 5  # the loop applies it at its next step
    while engine.scheduler_stats().aborted == aborted_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.scheduler_stats().aborted == aborted_before + 1
    made = engine.scheduler_stats().generated_tokens
    time.sleep(0.3)
    assert engine.scheduler_stats().generated_tokens == made  # the loop stopped making ids for it
    assert engine.scheduler_stats().running == 0
    assert made < 3000


def test_a_full_queue_answers_at_once(tiny_root: Path) -> None:
    engine = EditXEngine(EngineConfig(model_path=str(tiny_root), max_new_tokens=3000, cache_dir="",
                                      max_batch=1, max_queue=1)).load()
    try:
        prompt = engine.prepare(voice())
        ids = engine.prep.clone_prompt_ids(prompt, "a prompt", "Busy.")
        engine.gen.submit([engine.gen.request(ids, 0)])
        deadline = time.monotonic() + 10
        while engine.scheduler_stats().running == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        engine.gen.submit([engine.gen.request(ids, 1)])  # waits for the slot
        start = time.perf_counter()
        with pytest.raises(QueueFullError, match="EDITX_MAX_QUEUE=1"):
            engine.gen.submit([engine.gen.request(ids, 2)])
        assert time.perf_counter() - start < 0.5
    finally:
        engine.close()


def test_streamed_clone_concatenates_to_the_whole_clone(engine: EditXEngine) -> None:
    whole = engine.clone(voice(), "a prompt", "Streaming matters.", seed=4)
    chunks = list(engine.clone_stream(voice(), "a prompt", "Streaming matters.", seed=4))
    assert len(chunks) >= 2 and chunks[-1].last and not any(c.last for c in chunks[:-1])
    assert [c.index for c in chunks] == list(range(len(chunks)))
    streamed = np.concatenate([c.samples for c in chunks])
    assert streamed.size == whole.samples.size
    prompt = engine.prepare(voice())
    request = engine.gen.submit([engine.gen.request(engine.prep.clone_prompt_ids(prompt, "a prompt",
                                                                                 "Streaming matters."), 4)])[0]
    other_seed = engine.decode([i for ids in engine.gen.codec_ids(request, None) for i in ids], prompt, seed=104)[0]
    # sample-wise comparison is meaningless for a noise-excited vocoder: compare band energies (dB)
    near, far = _band_distance(streamed, whole.samples), _band_distance(other_seed, whole.samples)
    assert near < 0.75 * far


def test_closing_a_stream_early_aborts_its_request(long_engine: EditXEngine) -> None:
    engine = long_engine
    aborted_before = engine.scheduler_stats().aborted
    stream = engine.clone_stream(voice(), "a prompt", "Closed early.", seed=5)
    first = next(stream)
    assert first.samples.size > 0 and not first.last  # audio before the last id was made
    stream.close()
    deadline = time.monotonic() + 10
    while engine.scheduler_stats().aborted == aborted_before and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = engine.scheduler_stats()
    assert stats.running == 0 and stats.aborted == aborted_before + 1


def test_a_long_text_is_cloned_whole_and_in_order(engine: EditXEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    sentences = [f"This is sentence {k} of a long text, and it goes on for a while." for k in range(48)]
    text = " ".join(sentences)
    assert len(text) >= 3000
    seen: list[list[int]] = []
    real = engine.prep.clone_prompt_ids
    monkeypatch.setattr(engine.prep, "clone_prompt_ids", lambda p, pt, t: seen.append(t) or real(p, pt, t))
    hits_before = engine.scheduler_stats().prefix_hits
    out = engine.clone(voice(), "a prompt", text, seed=0)
    assert engine.scheduler_stats().prefix_hits - hits_before >= len(seen) - 1  # the voice prefilled once
    assert " ".join(seen) == text  # every sentence, each once, in order
    assert len(seen) > 1 and all(len(s) <= 300 for s in seen)
    assert out.generated_tokens > 40 * (len(seen) - 1)  # every piece was generated
    assert out.duration_s > len(seen) * 0.5


def test_requests_in_one_voice_prefill_its_system_turn_once(engine: EditXEngine) -> None:
    """Clones in one voice (and every edit) share their prompt's system turn: it is prefilled once."""
    prompt, other = voice(), voice(seconds=1.5)
    before = engine.scheduler_stats()
    first = race(lambda _: engine.clone(prompt, "one voice", "The first request in this voice.", seed=1), 1)[0]
    after_first = engine.scheduler_stats()
    assert after_first.prefix_hits == before.prefix_hits  # nothing stored for this voice yet
    assert after_first.prefix_store_entries >= 1 and after_first.prefix_store_mb > 0
    texts = [f"Request {k} in the same voice." for k in range(4)]
    together = race(lambda k: engine.clone(prompt, "one voice", texts[k], seed=k), 4)
    assert not any(isinstance(r, BaseException) for r in together), together
    stats = engine.scheduler_stats()
    assert stats.prefix_hits == after_first.prefix_hits + 4
    head = engine.prep.clone_prompt_ids(engine.prepare(prompt), "one voice", texts[0]).index(EOT_ID) + 1
    assert stats.prefill_tokens_reused == after_first.prefill_tokens_reused + 4 * head
    # copied or computed, the head gives the same audio for the same seed and text
    again = race(lambda _: engine.clone(prompt, "one voice", "The first request in this voice.", seed=1), 1)[0]
    np.testing.assert_array_equal(again.samples, first.samples)
    race(lambda _: engine.clone(other, "another voice", texts[0], seed=0), 1)  # another voice: computed
    assert engine.scheduler_stats().prefix_hits == stats.prefix_hits + 1  # (only `again` copied)


def test_edits_share_the_editing_persona(engine: EditXEngine) -> None:
    """Every edit prompt starts with the same system turn: after one edit, the others copy it."""
    race(lambda _: engine.edit(voice(), "some words", "emotion", "happy", seed=0), 1)
    before = engine.scheduler_stats().prefix_hits
    edited = race(lambda k: engine.edit(voice(seconds=1.0 + k / 4), "other words", "style", "whisper", seed=k), 2)
    assert not any(isinstance(r, BaseException) for r in edited), edited
    assert engine.scheduler_stats().prefix_hits == before + 2
