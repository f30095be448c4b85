"""The Dialogue tab without a browser: a script in saved voices becomes one audio with its caption track."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
import torch

from runners.audio import Audio
from runners.config import EngineConfig
from runners.engine import EditXEngine
from runners.errors import InvalidInputError
from runners.jobs import EditPass
from runners.text.script import parse_script
from ui.app import build_ui
from ui.dialogue import DialogueResult, add_line, edit_choices, example_script, script_line

VOICES = ("ann", "bob", "cy")
SCRIPT = """# a short scene
[ann] Hello there.
[bob] (happy) Hi, nice to see you.

[cy] Shall we go?
"""


def tone(hz: float, seconds: float = 1.5, rate: int = 16000) -> Audio:
    t = torch.arange(int(seconds * rate)) / rate
    return Audio((0.4 * torch.sin(2 * np.pi * hz * t) * (0.6 + 0.4 * torch.sin(2 * np.pi * 3 * t))).float(), rate)


@pytest.fixture(scope="module")
def engine(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> EditXEngine:
    eng = EditXEngine(EngineConfig(model_path=str(tiny_root), max_new_tokens=40, cache_dir="",
                                   voices_dir=str(tmp_path_factory.mktemp("ui-dialogue-voices")),
                                   max_script_turns=6)).load()
    for name, hz in zip(VOICES, (150, 210, 270)):
        eng.create_voice(name, tone(hz), f"this is {name}")
    return eng


def _handler(demo: gr.Blocks, api_name: str):  # noqa: ANN202 - the event's Python function
    return next(f.fn for f in demo.fns.values() if f.api_name == api_name)


def test_a_script_becomes_one_audio_with_one_caption_per_turn(engine: EditXEngine) -> None:
    seen: list[tuple[str, float]] = []

    def bar(fraction: float, desc: str | None = None) -> None:  # what gr.Progress receives
        seen.append((desc or "", fraction))

    # The Generate button's handler, as the browser runs it: audio, SRT text, caption files, summary.
    audio_path, srt_text, files, summary = asyncio.run(_handler(build_ui(lambda: engine), "dialogue")(SCRIPT, 5, bar))
    result = DialogueResult(audio_path, srt_text, files, summary)

    data, rate = sf.read(result.audio_path)
    assert rate == 24000 and data.size > 0
    # The caption track: one cue per turn, in script order, each voice named, times rising, within the audio.
    cues = result.srt.strip().split("\n\n")
    assert [c.split("\n")[2] for c in cues] == ["ann: Hello there.", "bob: Hi, nice to see you.", "cy: Shall we go?"]
    times = [re.findall(r"(\d\d):(\d\d):(\d\d),(\d\d\d)", c.split("\n")[1]) for c in cues]
    seconds = [[int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for h, m, s, ms in t] for t in times]
    assert all(start < end for start, end in seconds)
    assert [s for s, _ in seconds] == sorted(s for s, _ in seconds)
    assert seconds[-1][1] == pytest.approx(data.size / rate, abs=0.01)
    # The blank line before cy's turn is a longer pause than the default one after ann's.
    assert seconds[2][0] - seconds[1][1] > seconds[1][0] - seconds[0][1] + 0.5
    srt, vtt = result.caption_files
    assert srt.endswith(".srt") and Path(srt).read_text(encoding="utf-8") == result.srt
    assert vtt.endswith(".vtt") and Path(vtt).read_text(encoding="utf-8").startswith("WEBVTT")
    assert "<v bob>Hi, nice to see you." in Path(vtt).read_text(encoding="utf-8")
    assert result.summary.startswith("3 turns in 3 voice(s)")

    # The progress bar names the turns and only moves forward, up to done.
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(stage.startswith("turn 3/3: ") for stage, _ in seen)


def test_a_bad_line_is_an_error_naming_the_line(engine: EditXEngine) -> None:
    handler = _handler(build_ui(lambda: engine), "dialogue")
    with pytest.raises(gr.Error, match=r"line 3: .*sparkly"):
        asyncio.run(handler("[ann] Hello.\n\n[bob] (sparkly) Hi.", 0))
    with pytest.raises(gr.Error, match=r"line 2\).*nobody"):  # the engine names the turn and its line
        asyncio.run(handler("[ann] Hello.\n[nobody] Hi.", 0))
    with pytest.raises(gr.Error, match="7 turns; the limit is 6"):
        asyncio.run(handler("\n".join(f"[ann] Line {i}." for i in range(7)), 0))


def test_add_line_writes_lines_that_parse_back() -> None:
    script = example_script(["ann", "bob"])
    assert [t.voice for t in parse_script(script)] == ["ann", "bob", "ann"]
    assert {t.voice for t in parse_script(example_script([]))} == {"alice", "bob"}

    values = dict((label, value) for label, value in edit_choices())
    grown = add_line(script, "cy", [values["whisper (style)"], values["faster (speed)"]], "  See you\nsoon. ")
    turns = parse_script(grown)
    assert len(turns) == 4 and turns[:3] == parse_script(script)
    assert (turns[3].voice, turns[3].text) == ("cy", "See you soon.")
    assert turns[3].edits == (EditPass("style", "whisper"), EditPass("speed", "faster"))
    # A line whose text starts with a parenthesis stays text; a blank line before it (a pause) is kept.
    again = parse_script(add_line(grown + "\n", "ann", [], "(laughs) Bye."))
    assert again[4].text == "(laughs) Bye." and again[3].pause_after_ms is not None
    assert add_line("", "ann", "", "Hi.") == "[ann] Hi.\n"

    with pytest.raises(InvalidInputError, match="voice"):
        script_line(None, [], "Hi.")
    with pytest.raises(InvalidInputError, match="says"):
        script_line("ann", [], "   ")
    with pytest.raises(InvalidInputError, match="sparkly"):
        script_line("ann", "sparkly", "Hi.")


def test_the_ui_has_a_dialogue_tab(engine: EditXEngine) -> None:
    demo = build_ui(lambda: engine)
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"editx-tab-dialogue", "editx-script", "editx-line-voice", "editx-line-edits", "editx-line-text",
            "editx-add-line", "editx-dialogue-generate", "editx-dialogue-output", "editx-captions",
            "editx-caption-files"} <= ids
    with pytest.raises(gr.Error, match="voice"):
        next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_add_line")("", None, [], "Hi.")
