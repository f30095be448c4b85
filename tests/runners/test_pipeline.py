"""The one pipeline: a job's chunks add up to its whole answer, stages are reported once, one seed rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runners.audio import Audio
from runners.config import EngineConfig
from runners.engine import EditXEngine
from runners.events import EngineEvents
from runners.jobs import CloneJob, EditJob, EditPass, step_seed
from tests.concurrency import race
from tests.test_engine import voice


class Recorded(EngineEvents):
    def __init__(self) -> None:
        self.stages: list[str] = []
        self.first_chunks = 0

    def stage(self, name: str, seconds: float) -> None:
        assert seconds >= 0
        self.stages.append(name)

    def first_chunk(self, seconds: float) -> None:
        self.first_chunks += 1


@pytest.fixture(scope="module")
def engine(tiny_root: Path) -> EditXEngine:
    engine = EditXEngine(EngineConfig(model_path=str(tiny_root), max_new_tokens=40, cache_dir="")).load()
    yield engine
    engine.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", ["clone", "chain", "edit x2"])
def test_every_stage_is_reported_once_per_request(engine: EditXEngine, stream: bool, kind: str) -> None:
    events = engine.events = Recorded()
    try:
        job = {"clone": CloneJob("Counted once.", voice(), "a prompt", seed=1),
               "chain": CloneJob("Counted once.", voice(), "a prompt", seed=1, edits=(EditPass("emotion", "sad"),)),
               "edit x2": EditJob(voice(), "style", "whisper", "some words", passes=2, seed=1)}[kind]
        out = engine.run(job, stream=stream).collect()
    finally:
        engine.events = EngineEvents()
    assert sorted(events.stages) == ["flow", "llm", "prepare", "vocoder"]  # each once, whatever the steps
    assert events.first_chunks == (1 if stream else 0)
    assert out.samples.size > 0 and out.iterations == (1 if kind == "clone" else 2)
    assert set(out.timings) == {"prepare", "llm", "flow", "vocoder"}
    assert out.generated_tokens == 40 * out.iterations  # every step's ids are counted (the cap is 40)


def test_the_chunks_carry_the_whole_answer(engine: EditXEngine) -> None:
    stream = engine.run(CloneJob("Chunk by chunk.", voice(), "a prompt", seed=2), stream=True)
    chunks = list(stream)
    assert chunks[-1].last and [c.index for c in chunks] == list(range(len(chunks)))
    assert all(c.samples.size for c in chunks[:-1])  # no empty chunk but the closing one
    assert sum(c.tokens for c in chunks) == stream.tokens == 40
    whole = engine.run(CloneJob("Chunk by chunk.", voice(), "a prompt", seed=2), stream=True).collect()
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), whole.samples)


def test_one_seed_rule_for_sentences_and_passes() -> None:
    assert [step_seed(7, k) for k in range(3)] == [7, 8, 9]
    assert step_seed(2**32 - 1, 1) == 0 and step_seed(None, 3) is None


def test_a_chain_is_a_clone_then_an_edit_of_it_seeded_by_step(engine: EditXEngine) -> None:
    """The chain's edit pass is step 1: the same audio as editing the clone with seed + 1."""
    chain = race(lambda _: engine.clone(voice(), "a prompt", "Step by step.", seed=5,
                                        edits=(EditPass("emotion", "happy"),)), 1)[0]
    clone = race(lambda _: engine.clone(voice(), "a prompt", "Step by step.", seed=5), 1)[0]
    edited = race(lambda _: engine.edit(Audio(torch.from_numpy(clone.samples), 24000), "Step by step.", "emotion",
                                        "happy", seed=6), 1)[0]
    np.testing.assert_array_equal(chain.samples, edited.samples)
    assert chain.iterations == 2 and chain.generated_tokens == clone.generated_tokens + edited.generated_tokens
