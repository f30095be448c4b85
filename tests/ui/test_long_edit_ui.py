"""EDIT in the UI takes a recording longer than the model's window: it is edited in pieces, the bar counts them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from runners.config import EngineConfig
from runners.engine import EditXEngine
from tests.service_helpers import wav_bytes
from ui.app import build_ui

RATE = 16000


def phrases(count: int, seconds: float = 3.5, pause_s: float = 0.6) -> np.ndarray:
    """``count`` voiced stretches, each followed by a pause: a recording with places to cut it."""
    t = np.arange(int(seconds * RATE)) / RATE
    out = []
    for i in range(count):
        out.append((0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))))
        out.append(np.zeros(int(pause_s * RATE)))
    return np.concatenate(out).astype(np.float32)


@pytest.fixture(scope="module")
def engine(tiny_root: Path) -> EditXEngine:
    # Without Whisper the pieces are cut at the quietest moments; denoise needs no transcript.
    return EditXEngine(EngineConfig(model_path=str(tiny_root), max_new_tokens=40, cache_dir="",
                                    auto_transcribe=False, max_edit_audio_s=45)).load()


def _handler(demo: gr.Blocks, api_name: str):  # noqa: ANN202 - the event's Python function
    return next(f.fn for f in demo.fns.values() if f.api_name == api_name)


def test_a_long_recording_is_edited_in_pieces_with_progress_per_piece(engine: EditXEngine, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDITX_MAX_EDIT_AUDIO_S", "45")
    demo = build_ui(lambda: engine)
    hints = " ".join(str(getattr(b, "value", "")) + str(getattr(b, "label", "")) for b in demo.blocks.values())
    assert "audio to edit up to 45 s" in hints and "recordings up to 45 s" in hints  # what the page promises

    upload = tmp_path / "long.wav"
    upload.write_bytes(wav_bytes(phrases(10), RATE))  # 41 s
    seen: list[tuple[str, float]] = []

    def bar(fraction: float, desc: str | None = None) -> None:  # what gr.Progress receives
        seen.append((desc or "", fraction))

    edit = _handler(demo, "edit")
    path, history, _, summary = asyncio.run(edit([], str(upload), "", "denoise", None, "", 1, 3, bar))
    assert sf.info(path).frames > 0 and history[-1].label == "EDIT denoise"
    assert summary.startswith("edited in 2 pieces; ")
    stages = [stage for stage, _ in seen]
    assert any(s.startswith("piece 1/2: ") for s in stages) and any(s.startswith("piece 2/2: ") for s in stages)
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    too_long = tmp_path / "too-long.wav"
    too_long.write_bytes(wav_bytes(phrases(12), RATE))  # 49 s
    with pytest.raises(gr.Error, match=r"49\.\d s long; the limit is 45 s"):
        asyncio.run(edit([], str(too_long), "", "denoise", None, "", 1, 3, bar))
