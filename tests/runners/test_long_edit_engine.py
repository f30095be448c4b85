"""Edits of recordings longer than the model's window: cut at pauses, edited as one batch, joined without clicks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from runners.audio import DECODER_RATE, Audio
from runners.config import EngineConfig
from runners.engine import EditXEngine
from runners.errors import InputTooLargeError, InvalidInputError
from runners.jobs import EditJob
from tests.speech import speak

LINES = [
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her Wednesday at the train station.",
]
PAUSE_S = 0.9


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Audio:
    """About 90 s of espeak-ng speech: the four lines, again and again, with pauses between them."""
    folder = tmp_path_factory.mktemp("long-edit")
    lines = []
    for i, line in enumerate(LINES):
        data, rate = sf.read(speak(line, folder / f"line{i}.wav"), dtype="float32")
        lines.append(data)
    pause = np.zeros(int(PAUSE_S * rate), np.float32)
    parts: list[np.ndarray] = [pause]
    while sum(p.size for p in parts) < 90 * rate:
        for line in lines:
            parts += [line, pause]
    return Audio(torch.from_numpy(np.concatenate(parts)), rate)


@pytest.fixture(scope="module")
def engine(tiny_root: Path) -> EditXEngine:
    return EditXEngine(EngineConfig(model_path=str(tiny_root), max_new_tokens=40, cache_dir="")).load()


def joins_are_smooth(samples: np.ndarray, boundaries: list[int]) -> None:
    """No sample step at a join is larger than the steps inside the audio (a click would be)."""
    steps = np.abs(np.diff(samples))
    half = int(0.002 * DECODER_RATE)
    inside = np.ones(steps.size, bool)
    for b in boundaries:
        inside[max(0, b - half):b + half] = False
    ordinary = steps[inside].max()  # the largest step within the pieces themselves
    for b in boundaries:
        around = steps[max(0, b - half):b + half]
        assert around.max(initial=0.0) <= ordinary + 1e-6, f"a click at {b / DECODER_RATE:.3f} s"


@pytest.mark.parametrize("edit_type, edit_info", [("emotion", "happy"), ("speed", "faster")])
def test_a_90_s_recording_is_edited_in_pieces_joined_without_clicks(
        engine: EditXEngine, recording: Audio, edit_type: str, edit_info: str) -> None:
    assert recording.duration_s > engine.config.max_audio_s * 2.5
    finished = engine.scheduler_stats().finished
    stages: list[str] = []
    syn = engine.run(EditJob(recording, edit_type, edit_info, seed=5), progress=lambda s, f: stages.append(s)).collect()
    pieces = syn.captions
    assert len(pieces) >= 4, "90 s in pieces of at most 25 s"
    assert engine.scheduler_stats().finished - finished == len(pieces), "every piece is edited by the model"
    assert all(c.text for c in pieces), "each piece is edited with what Whisper heard in it"
    assert any(s.startswith(f"piece {len(pieces)}/{len(pieces)}") for s in stages)
    starts = [c.start_s for c in pieces]
    assert starts == sorted(starts) and all(c.end_s > c.start_s for c in pieces)
    for prev, nxt in zip(pieces, pieces[1:]):  # the pause between two pieces is kept, as silence
        assert nxt.start_s - prev.end_s > 0.3
        gap = syn.samples[int(prev.end_s * DECODER_RATE) + 1:int(nxt.start_s * DECODER_RATE) - 1]
        assert np.abs(gap).max(initial=0.0) == 0.0
    joins_are_smooth(syn.samples, [int(c.start_s * DECODER_RATE) for c in pieces]
                     + [int(c.end_s * DECODER_RATE) - 1 for c in pieces])


def test_a_streamed_long_edit_is_the_whole_one_in_pieces(engine: EditXEngine, recording: Audio) -> None:
    short = Audio(recording.samples[:int(45 * recording.sample_rate)], recording.sample_rate)
    stream = engine.run(EditJob(short, "denoise", seed=2), stream=True)
    chunks = list(stream)
    assert sum(c.samples.size for c in chunks) > 0
    assert len(stream.captions) >= 2


def test_paralinguistic_edits_of_long_audio_are_refused_clearly(engine: EditXEngine, recording: Audio) -> None:
    with pytest.raises(InvalidInputError) as err:
        engine.run(EditJob(recording, "paralinguistic", audio_text="hi", target_text="hi [Laughter]"))
    assert "paralinguistic" in str(err.value) and "30 s" in str(err.value)


def test_audio_over_the_long_edit_limit_is_too_large(tiny_root: Path, recording: Audio) -> None:
    small = EditXEngine(EngineConfig(model_path=str(tiny_root), cache_dir="", max_edit_audio_s=60))
    with pytest.raises(InputTooLargeError) as err:
        small.run(EditJob(recording, "denoise"))
    assert "60 s" in str(err.value)


def test_the_engines_own_transcripts_are_decoded_greedily(
        engine: EditXEngine, recording: Audio, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whisper's fallback samples at 0.2 … 1.0 at random: the same recording was cut differently run to run."""
    asked: list[dict] = []
    transcribe = engine.prep.transcriber.transcribe_detailed

    def spy(audio: Audio, language: str | None = None, **options: object):  # noqa: ANN202
        asked.append(options)
        return transcribe(audio, language, **options)
    monkeypatch.setattr(engine.prep.transcriber, "transcribe_detailed", spy)
    rate = recording.sample_rate
    engine.run(EditJob(Audio(recording.samples[:40 * rate], rate), "emotion", "sad", seed=1)).collect()
    engine.clone(Audio(recording.samples[:8 * rate], rate), None, "Some words to say.", seed=1)
    assert len(asked) == 2
    assert [a.get("temperature") for a in asked] == [0.0, 0.0]
    assert asked[0].get("word_timestamps") is True

    # a greedy transcript is not the answer to a question asked with the fallback (0.0 == False in Python)
    short = Audio(recording.samples[:6 * rate], rate)
    engine.prep.transcribe(short, temperature=0.0)
    engine.prep.transcribe(short)
    assert [a.get("temperature") for a in asked[2:]] == [0.0, None]
