"""Shared fixtures: one tiny random checkpoint per test session, built offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tiny models on a small shared CPU: one intra-op thread is many times faster than
# several threads fighting over two cores (measured: 63 s → 5.5 s for the decoder tests).
torch.set_num_threads(1)

# Nothing in the test suite may reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from runners.models.tiny import build_tiny_model_root

    return build_tiny_model_root(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def t2w(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - Token2Wav, imported lazily
    """The tiny random decoder alone (flow + vocoder), shared by the decoder tests; only ever read."""
    from runners.models.store import DECODER_DIR, LLM_DIR
    from runners.models.tiny import build_tiny_model_root
    from runners.models.decoder.token2wav import Token2Wav

    root = build_tiny_model_root(tmp_path_factory.mktemp("tiny-decoder"), seed=0, parts=("decoder",))
    return Token2Wav(root / LLM_DIR / DECODER_DIR)
