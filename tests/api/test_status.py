"""One answer to "is this the random tiny model?": the header, /status and the UI banner agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from api.audio_out import synthesis_headers
from api.status import TINY_NOTE, build_status
from runners.config import EngineConfig
from runners.engine import EditXEngine, Synthesis
from ui.app import banner_text


@pytest.mark.parametrize("by", ["name", "path"])
def test_tiny_model_is_reported_as_tiny_however_it_was_given(tiny_root: Path, by: str) -> None:
    if by == "name":
        cfg = EngineConfig(model_path="tiny", tiny_dir=str(tiny_root), device="cpu", cache_dir="")
    else:  # the same random checkpoint given by its folder: used to be reported as real weights
        cfg = EngineConfig(model_path=str(tiny_root), model_source="local", device="cpu", cache_dir="")
    engine = EditXEngine(cfg)
    try:
        engine.paths = engine.resolve_paths()  # what load() records first; the weights need not be read
        status = build_status(engine)
        assert status.tiny_random_weights is True
        assert status.note == TINY_NOTE
        syn = Synthesis(np.zeros(240, np.float32), 24000, 1)
        assert synthesis_headers(syn, engine.is_tiny)["X-EditX-Tiny-Random-Weights"] == "true"
        assert "output is noise" in banner_text(engine)
    finally:
        engine.close()


def test_real_weights_carry_no_tiny_note(tmp_path: Path) -> None:
    engine = EditXEngine(EngineConfig(model_path=str(tmp_path / "real"), model_source="local", device="cpu",
                                      cache_dir=""))
    try:
        status = build_status(engine)
        assert status.tiny_random_weights is False and status.note is None
        syn = Synthesis(np.zeros(240, np.float32), 24000, 1)
        assert synthesis_headers(syn, engine.is_tiny)["X-EditX-Tiny-Random-Weights"] == "false"
        assert "noise" not in banner_text(engine)
    finally:
        engine.close()
