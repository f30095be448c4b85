"""What the UI writes to disk stays bounded however long the service runs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile as sf

from runners.engine import Synthesis
from ui.outputs import write_output


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
