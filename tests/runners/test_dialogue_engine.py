"""Dialogues through the one engine path: turns in several voices as one batch, joined with their pauses."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from runners.audio import DECODER_RATE, Audio
from runners.config import EngineConfig
from runners.engine import EditXEngine
from runners.errors import InputTooLargeError, InvalidInputError
from runners.jobs import DialogueJob, EditPass, Turn

VOICES = ("ann", "bob", "cy")


def tone(hz: float, seconds: float = 1.5, rate: int = 16000) -> Audio:
    t = torch.arange(int(seconds * rate)) / rate
    return Audio((0.4 * torch.sin(2 * np.pi * hz * t) * (0.6 + 0.4 * torch.sin(2 * np.pi * 3 * t))).float(), rate)


@pytest.fixture(scope="module")
def engine(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> EditXEngine:
    folder = tmp_path_factory.mktemp("dialogue-voices")
    eng = EditXEngine(EngineConfig(model_path=str(tiny_root), max_new_tokens=40, cache_dir="",
                                   voices_dir=str(folder), max_script_turns=12, max_script_voices=3,
                                   max_text_chars=400)).load()
    for name, hz in zip(VOICES, (150, 210, 270)):
        eng.create_voice(name, tone(hz), f"this is {name}")
    return eng


def script(n: int = 8) -> DialogueJob:
    turns = tuple(Turn(f"line number {i} here.", VOICES[i % 3], pause_after_ms=100 + 50 * i) for i in range(n))
    return DialogueJob(turns, seed=7)


def test_a_dialogue_is_one_audio_with_one_caption_per_turn_in_order(engine: EditXEngine) -> None:
    job = script(8)
    syn = engine.run(job).collect()
    assert syn.sample_rate == DECODER_RATE and syn.samples.size > 0
    caps = syn.captions
    assert [c.turn for c in caps] == list(range(8))
    assert [c.voice for c in caps] == [t.voice for t in job.turns]
    assert [c.text for c in caps] == [t.text for t in job.turns]
    starts = [c.start_s for c in caps]
    assert starts == sorted(starts) and all(c.end_s > c.start_s for c in caps)
    for prev, nxt, turn in zip(caps, caps[1:], job.turns):  # the pause after each turn is silence of its length
        assert nxt.start_s - prev.end_s == pytest.approx(turn.pause_after_ms / 1000, abs=0.002)
        gap = syn.samples[int(prev.end_s * DECODER_RATE) + 1:int(nxt.start_s * DECODER_RATE) - 1]
        assert np.abs(gap).max(initial=0.0) == 0.0
    assert caps[-1].end_s == pytest.approx(syn.duration_s, abs=0.002)


def test_a_seeded_dialogue_is_the_same_audio_again(engine: EditXEngine) -> None:
    first = engine.run(script(4)).collect()
    again = engine.run(script(4)).collect()
    assert first.samples.shape == again.samples.shape
    np.testing.assert_allclose(first.samples, again.samples, atol=2e-3)  # batched decodes round differently


def test_turn_one_of_a_seeded_dialogue_is_its_clone(engine: EditXEngine) -> None:
    job = script(3)
    syn = engine.run(job).collect()
    alone = engine.clone(None, None, job.turns[0].text, seed=7, voice=job.turns[0].voice)
    first = syn.samples[:int(syn.captions[0].end_s * DECODER_RATE)]
    n = min(first.size, alone.samples.size) - int(0.03 * DECODER_RATE)  # the pause's fade-out at its end
    np.testing.assert_allclose(first[:n], alone.samples[:n], atol=2e-3)


def test_turn_edits_are_applied_after_that_turns_clone(engine: EditXEngine) -> None:
    turns = (Turn("plain words.", "ann"), Turn("happy words.", "bob", (EditPass("emotion", "happy"),)))
    stream = engine.run(DialogueJob(turns, seed=3))
    assert stream.iterations == 2
    syn = stream.collect()
    assert [c.turn for c in syn.captions] == [0, 1]


def edited_script(n: int = 3) -> DialogueJob:
    turns = tuple(Turn(f"line number {i} here.", VOICES[i % 3], (EditPass("emotion", "happy"),)) for i in range(n))
    return DialogueJob(turns, seed=11)


def submissions(engine: EditXEngine, monkeypatch: pytest.MonkeyPatch) -> list[list]:
    """Every batch of requests the engine queues, in order (the first is the turns' clones)."""
    seen: list[list] = []
    submit = engine.gen.submit

    def recording(requests: list) -> list:
        queued = submit(requests)
        seen.append(list(queued))
        return queued
    monkeypatch.setattr(engine.gen, "submit", recording)
    return seen


def test_the_edit_passes_of_several_turns_are_generated_together(
        engine: EditXEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = submissions(engine, monkeypatch)
    syn = engine.run(edited_script(3)).collect()
    assert [c.turn for c in syn.captions] == [0, 1, 2]
    clones, *edits = seen
    assert len(clones) == 3 and [len(e) for e in edits] == [1, 1, 1]
    passes = [e[0] for e in edits]
    assert all(r.finished_at is not None for r in passes)
    # every turn's edit pass was queued before any of them had finished: they ran as one batch,
    # not each after the output reached its turn
    assert max(r.arrival for r in passes) < min(r.finished_at for r in passes)


def test_a_seeded_dialogue_with_edits_is_the_same_audio_again(engine: EditXEngine) -> None:
    first = engine.run(edited_script(3)).collect()
    again = engine.run(edited_script(3)).collect()
    assert first.samples.shape == again.samples.shape
    np.testing.assert_allclose(first.samples, again.samples, atol=2e-3)


def slow_steps(engine: EditXEngine, monkeypatch: pytest.MonkeyPatch, seconds: float = 0.02) -> None:
    """Engine steps as slow as a busy GPU's, so generation visibly overlaps the first audio."""
    loop = engine._loop
    assert loop is not None
    step = loop.step

    def slowed() -> None:
        time.sleep(seconds)
        step()
    monkeypatch.setattr(loop, "step", slowed)


def test_a_streamed_dialogue_sends_turn_one_before_the_last_turn_is_made(
        engine: EditXEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    slow_steps(engine, monkeypatch)
    job = script(8)
    stream = engine.run(job, stream=True)
    first = next(c for c in stream if c.samples.size)
    busy = engine.scheduler_stats()
    assert busy.running + busy.waiting > 0, "every turn was generated before the first audio"
    rest = stream.collect()
    assert [c.turn for c in [*first.captions, *rest.captions]] == list(range(8))


def test_closing_a_dialogue_aborts_its_turns(engine: EditXEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    slow_steps(engine, monkeypatch)
    before = engine.scheduler_stats().aborted
    stream = engine.run(script(8), stream=True)
    next(c for c in stream if c.samples.size)
    stream.close()
    deadline = time.time() + 10
    while engine.scheduler_stats().running + engine.scheduler_stats().waiting and time.time() < deadline:
        time.sleep(0.05)
    assert engine.scheduler_stats().aborted > before
    assert engine.scheduler_stats().running == 0


def test_closing_a_dialogue_with_edits_leaves_no_pass_running(
        engine: EditXEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    slow_steps(engine, monkeypatch)
    seen = submissions(engine, monkeypatch)
    stream = engine.run(edited_script(3), stream=True)
    deadline = time.time() + 20
    while len(seen) < 2 and time.time() < deadline:  # the clones are decoded and an edit pass is queued
        time.sleep(0.02)
    assert len(seen) >= 2
    stream.close()
    quiet_since = None
    deadline = time.time() + 20
    while time.time() < deadline:  # nothing runs, and nothing is queued later by a pass still on its way
        stats = engine.scheduler_stats()
        if stats.running + stats.waiting:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 1.0:
            break
        time.sleep(0.05)
    assert engine.scheduler_stats().running + engine.scheduler_stats().waiting == 0
    assert all(r.finished for batch in seen for r in batch)


@pytest.mark.parametrize("turns, named", [
    ((Turn("hi.", "ann"), Turn("who?", "nobody", line=4)), "turn 2 (line 4)"),
    ((Turn("hi.", "ann"), Turn("x.", "bob", (EditPass("emotion", "furious-ish"),))), "turn 2"),
    ((Turn("hi.", "ann"), Turn("   ", "bob")), "turn 2"),
    ((Turn("hi.", "ann", pause_after_ms=60_000), Turn("x.", "bob")), "turn 1"),
    ((), "no turns"),
])
def test_a_bad_turn_is_refused_naming_it(engine: EditXEngine, turns: tuple[Turn, ...], named: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        engine.run(DialogueJob(turns))
    assert named in str(err.value)
    assert not isinstance(err.value, InputTooLargeError)


@pytest.mark.parametrize("turns, named", [
    (tuple(Turn("a.", "ann") for _ in range(13)), "13 turns"),
    ((Turn("a.", "ann"), Turn("b.", "bob"), Turn("c.", "cy"), Turn("d.", "dee")), "4 voices"),
    ((Turn("a" * 300, "ann"), Turn("b" * 200, "bob")), "500 characters"),
])
def test_a_script_over_the_limits_is_too_large(engine: EditXEngine, turns: tuple[Turn, ...], named: str) -> None:
    with pytest.raises(InputTooLargeError) as err:
        engine.run(DialogueJob(turns))
    assert named in str(err.value)
