"""The UI's Voices section without a browser: save, list, clone with a voice, streamed playback, delete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runners.config import EngineConfig
from runners.engine import EditXEngine
from runners.errors import ConflictError, InvalidInputError
from tests.service_helpers import tone, wav_bytes
from ui.app import build_ui, clone_action, save_voice_action, stream_clone_action, voice_choices


def _progress(stage: str, fraction: float) -> None:
    return None


@pytest.fixture(scope="module")
def engine(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> EditXEngine:
    voices = tmp_path_factory.mktemp("voices")
    return EditXEngine(EngineConfig(model_path=str(tiny_root), max_new_tokens=60, cache_dir="",
                                    voices_dir=str(voices))).load()


def test_save_clone_stream_delete(engine: EditXEngine, tmp_path: Path) -> None:
    voices = engine.voices
    upload = tmp_path / "in.wav"
    upload.write_bytes(wav_bytes(tone(2.0)))
    assert save_voice_action(engine, str(upload), " anna ", "a test prompt") == "anna"
    assert voice_choices(voices) == [("anna — a test prompt", "anna")]
    with pytest.raises(ConflictError):
        save_voice_action(engine, str(upload), "anna", "a test prompt")
    with pytest.raises(InvalidInputError):
        save_voice_action(engine, None, "other", "")

    engine.cache.clear()  # as after a restart: only the voice folder has the features
    path, history, summary = clone_action(engine, None, "", "Hello there.", 0, _progress, voice_id="anna")
    assert Path(path).is_file() and history[0].label == "CLONE (anna): Hello there." and "s of audio" in summary
    stats = engine.cache.stats()
    assert stats.hits == 1 and stats.misses == 0  # preparation came from the voice

    pieces = list(stream_clone_action(engine, "anna", None, "", "Hello there.", 0))
    assert len(pieces) >= 2 and all(rate == 24000 and p.dtype == np.int16 for rate, p in pieces)
    with pytest.raises(InvalidInputError):
        list(stream_clone_action(engine, None, None, "", "Hello there.", 0))

    voices.delete("anna")
    assert voice_choices(voices) == []


def test_ui_builds_with_the_voices_section(engine: EditXEngine, tmp_path: Path) -> None:
    demo = build_ui(lambda: engine)
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"editx-voice-name", "editx-save-voice", "editx-voice", "editx-clone-voice", "editx-stream",
            "editx-stream-output"} <= ids
