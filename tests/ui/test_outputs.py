"""What the UI writes to disk stays bounded however long the service runs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile as sf

from runners.engine import Synthesis
from runners.pipeline.chunks import Caption
from ui.outputs import write_captions, write_output


def test_outputs_are_playable_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    written = []
    for i in range(5):
        syn = Synthesis(np.full(2400, 0.1 * (i + 1), dtype=np.float32), 24000, 10)
        written.append(write_output(syn, tmp_path, keep=3))
        time.sleep(0.01)  # distinct modification times
    kept = sorted(str(p) for p in tmp_path.glob("*.wav"))
    assert kept == sorted(written[-3:])
    data, rate = sf.read(written[-1])
    assert rate == 24000 and len(data) == 2400 and abs(data[0] - 0.5) < 1e-3


def test_caption_files_sit_beside_their_audio_and_go_with_it(tmp_path: Path) -> None:
    syn = Synthesis(np.full(24000, 0.1, dtype=np.float32), 24000, 10,
                    captions=[Caption(0, 0.0, 0.5, "Hello there.", 0, "ann"), Caption(1, 0.7, 1.0, "Hi.", 1, "bob")])
    first = write_output(syn, tmp_path, keep=1)
    srt, vtt = write_captions(first, syn.captions)
    assert Path(srt).read_text(encoding="utf-8").startswith("1\n00:00:00,000 --> 00:00:00,500\nann: Hello there.")
    assert Path(vtt).read_text(encoding="utf-8").startswith("WEBVTT")
    assert Path(srt).stem == Path(vtt).stem == Path(first).stem
    time.sleep(0.01)
    write_output(syn, tmp_path, keep=1)
    assert not Path(first).exists() and not Path(srt).exists() and not Path(vtt).exists()
