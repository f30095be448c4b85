"""What the UI writes for the player and the downloads: result audio and its caption files.

Files go to one folder under the system's temporary directory; only the newest results are
kept (with their caption files), so a service that runs for months never fills its disk.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from api.audio_out import encode
from api.captions import to_srt, to_vtt
from runners.engine import Synthesis
from runners.pipeline.chunks import Caption

OUTPUT_DIR = Path(tempfile.gettempdir()) / "editx-ui"
KEEP_OUTPUTS = 500  # newest UI outputs kept on disk; older ones go so a long-running service never fills it
CAPTION_SUFFIXES = (".srt", ".vtt")  # caption files kept beside their audio, and removed with it


def write_output(syn: Synthesis, directory: Path = OUTPUT_DIR, keep: int = KEEP_OUTPUTS) -> str:
    """Save a result for the player and the history; keep only the newest ``keep`` files."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"editx-{uuid.uuid4().hex[:12]}.wav"
    path.write_bytes(encode(syn.samples, syn.sample_rate, "wav"))
    outputs = sorted(directory.glob("editx-*.wav"), key=lambda p: p.stat().st_mtime_ns)
    for old in outputs[: max(0, len(outputs) - keep)]:
        old.unlink(missing_ok=True)
        for suffix in CAPTION_SUFFIXES:
            old.with_suffix(suffix).unlink(missing_ok=True)
    return str(path)


def write_captions(audio_path: str, captions: Sequence[Caption]) -> tuple[str, str]:
    """SRT and WebVTT files of ``captions`` beside the audio they time (same name), for download."""
    audio = Path(audio_path)
    srt, vtt = audio.with_suffix(".srt"), audio.with_suffix(".vtt")
    srt.write_text(to_srt(captions), encoding="utf-8")
    vtt.write_text(to_vtt(captions), encoding="utf-8")
    return str(srt), str(vtt)


def summary(syn: Synthesis) -> str:
    """One line on a result: its length, tokens, passes and where the time went."""
    times = ", ".join(f"{k} {v:.2f} s" for k, v in syn.timings.items())
    return (
        f"{syn.duration_s:.2f} s of audio, {syn.generated_tokens} tokens, {syn.iterations} pass(es); "
        f"took {sum(syn.timings.values()):.2f} s ({times})"
    )
