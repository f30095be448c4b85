"""Tiny random-weight checkpoints in the exact official layout.

``python -m runners.tiny DIR`` writes a complete model root offline in seconds:
the real file names, key names and id layout, with small dimensions. Tests,
CI and anyone without the real weights run the whole engine on it; its output
is noise by construction. ``--official-size`` gives the LLM, flow and vocoder the
release's dimensions instead (as fast as the real model: for measuring speed).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from runners.model_store import AWQ_DIR, DECODER_DIR, DEFAULT_FUNASR_ID, LLM_DIR, TOKENIZER_DIR

ALL_PARTS = ("tokenizer", "step1", "decoder")
TINY_MARKER = "TINY_RANDOM_WEIGHTS"


def build_tiny_model_root(root: Path | str, seed: int = 0, parts: Collection[str] = ALL_PARTS,
                          official_size: bool = False, chat_template: bool = False) -> Path:
    """Write the parts of a random-weight model root under ``root``; returns the root.

    The same seed always gives byte-identical weights, so numbers recorded on a
    tiny checkpoint (parity data) stay valid. ``official_size`` writes the LLM, the
    flow and the vocoder at the release's dimensions (the audio tokenizer and the
    speaker model stay tiny: they run once per prompt audio, whose features are cached).
    ``chat_template`` gives the text tokenizer a chat template in the 2026 release's layout.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    unknown = set(parts) - set(ALL_PARTS)
    if unknown:
        raise ValueError(f"unknown tiny parts {sorted(unknown)}; choose from {ALL_PARTS}")
    if "tokenizer" in parts:
        from runners.tiny.audio_tokenizer import write_tokenizer_part

        write_tokenizer_part(root / TOKENIZER_DIR, DEFAULT_FUNASR_ID, seed=seed)
    if "step1" in parts:
        from runners.tiny.step1 import write_step1_part

        write_step1_part(root / LLM_DIR, seed=seed, official_size=official_size, chat_template=chat_template)
    if "decoder" in parts:
        from runners.tiny.decoder import write_decoder_part

        write_decoder_part(root / LLM_DIR / DECODER_DIR, seed=seed, official_size=official_size)
    (root / TINY_MARKER).write_text("random weights written by runners.tiny: output is noise\n")
    return root


def write_tiny_awq_part(root: Path | str) -> Path:
    """Add ``Step-Audio-EditX-AWQ-4bit/`` to a tiny root: its Step1 quantized to W4A16 (compressed-tensors)."""
    from runners.tiny.awq import write_awq_folder

    import shutil
    import tempfile

    root = Path(root)
    # Written beside, then renamed: a crash never leaves a half-written folder that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=".awq-", dir=root))
    try:
        write_awq_folder(root / LLM_DIR, staging)
        try:
            staging.rename(root / AWQ_DIR)
        except OSError:
            if not (root / AWQ_DIR).is_dir():  # another process may have finished first: that copy is as good
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root / AWQ_DIR


def random_codec_ids(n: int, seed: int) -> list[int]:
    """``n`` random codec ids in the LLM's output order (2 vq02 then 3 vq06 per group): decoder input."""
    import torch

    from runners.tokens import GROUP_SIZE

    g = torch.Generator().manual_seed(seed)
    vq02 = torch.randint(0, 1024, (n,), generator=g).tolist()
    vq06 = (1024 + torch.randint(0, 4096, (n,), generator=g)).tolist()
    return [vq02[i] if i % GROUP_SIZE < 2 else vq06[i] for i in range(n)]
