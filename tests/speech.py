"""Real English speech for tests, made offline with espeak-ng.

espeak-ng is robotic but deterministic; Whisper tiny.en transcribes clear,
common words from it well (``SENTENCE`` comes back word for word).
``./dev test`` installs espeak-ng when it runs as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import torch

from runners.audio import resample

# Chosen by listening with tiny.en: every word survives espeak-ng + greedy decoding.
SENTENCE = "Please call Stella and ask her to bring these things with her from the store."


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _install_espeak() -> None:
    """As root, install espeak-ng the way ``./dev test`` does (for a bare ``pytest`` run)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "espeak-ng"]):
        subprocess.run(cmd, check=False, capture_output=True, timeout=600, env=env)


def require_espeak() -> None:
    """Skip the calling test when espeak-ng is missing and we are not root to install it."""
    if espeak_available():
        return
    if os.geteuid() != 0:
        pytest.skip("espeak-ng is not installed and we are not root to install it (apt-get install espeak-ng)")
    _install_espeak()
    if not espeak_available():
        pytest.fail("espeak-ng is missing and `apt-get install espeak-ng` failed; ./dev test installs it")


def speak(text: str, path: str | os.PathLike[str], rate: int = 16000) -> Path:
    """Speak ``text`` into a mono WAV at ``rate`` Hz and return its path."""
    require_espeak()
    out = Path(path)
    raw = out.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True, timeout=60)
    data, native = sf.read(raw, dtype="float32")
    raw.unlink()
    wav = resample(torch.from_numpy(data), int(native), rate)
    sf.write(out, wav.numpy(), rate, subtype="PCM_16")
    return out
