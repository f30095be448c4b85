"""Uploads in every common container: what browsers, phones and OpenAI clients send decodes, the rest is a clear 4xx.

Every file is made here with PyAV from a 1 s 440 Hz tone, decoded by runners.audio.decode_audio,
and checked for what a user would hear: the length (within a codec's priming delay), the rate,
one channel, and the tone itself (a decoder returning noise of the right length fails).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from api.uploads import ACCEPTED_FORMATS, decode_field, read_upload
from api.errors import rule_for
from runners.audio import AudioDecodeError, AudioTooLongError, decode_audio
from tests.media import dominant_hz, encode, sine

# (kind, rate made at, rate expected back, slack in seconds: codec priming/padding, 0 = exact length)
CASES: list[tuple[str, int, int, float]] = [
    ("webm", 48000, 48000, 0.03),
    ("ogg", 48000, 48000, 0.03),
    ("webm", 24000, 48000, 0.03),  # Opus always decodes at 48 kHz
    ("m4a", 24000, 24000, 0.1),
    ("mp4", 44100, 44100, 0.1),
    ("aac", 24000, 24000, 0.1),  # ADTS has no priming information: 1-2 AAC frames more
    ("mp3", 24000, 24000, 0.1),
    ("flac", 24000, 24000, 0.0),
    ("wav", 24000, 24000, 0.0),
]


def _check_tone(samples: torch.Tensor, rate: int, seconds: float = 1.0, slack: float = 0.0) -> None:
    assert samples.dtype == torch.float32 and samples.dim() == 1
    assert abs(samples.numel() / rate - seconds) <= slack + 1e-9, samples.numel() / rate
    x = samples.numpy()
    assert dominant_hz(x, rate) == pytest.approx(440.0, abs=3.0)
    rms = float(np.sqrt(np.mean(x**2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.15)  # the level survives, not only the pitch


@pytest.mark.parametrize(("kind", "made_at", "rate", "slack"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_common_container_decodes_to_the_tone(kind: str, made_at: int, rate: int, slack: float) -> None:
    audio = decode_audio(encode(kind, sine(440, 1.0, made_at), made_at))
    assert audio.sample_rate == rate
    _check_tone(audio.samples, rate, slack=slack)


def test_the_bytes_decide_not_the_file_name(tmp_path: Path) -> None:
    # A phone's m4a saved as ".wav", and a browser recording with no extension at all.
    (tmp_path / "voice.wav").write_bytes(encode("m4a", sine(440, 1.0, 24000), 24000))
    (tmp_path / "blob").write_bytes(encode("webm", sine(440, 1.0, 48000), 48000))
    m4a = read_upload(tmp_path / "voice.wav", "audio", 10**7)
    webm = read_upload(tmp_path / "blob", "audio", 10**7)
    _check_tone(m4a.samples, m4a.sample_rate, slack=0.1)
    _check_tone(webm.samples, webm.sample_rate, slack=0.03)


@pytest.mark.parametrize("kind", ["webm", "m4a"])
def test_stereo_is_averaged_to_mono(kind: str) -> None:
    rate = 48000
    both = encode(kind, np.stack([sine(440, 1.0, rate), sine(660, 1.0, rate)]), rate)
    audio = decode_audio(both)
    x = audio.samples.numpy()
    spectrum = np.abs(np.fft.rfft(x[:rate] * np.hanning(rate)))  # 1 Hz per bin
    assert sorted(int(b) for b in np.argsort(spectrum)[-2:]) == [440, 660]
    # each channel at half strength, as runners.audio.to_mono mixes: 0.25 amplitude each
    assert float(np.sqrt(np.mean(x**2))) == pytest.approx(0.25, rel=0.15)


def test_video_with_a_sound_track_gives_its_audio() -> None:
    audio = decode_audio(encode("mp4", sine(440, 1.0, 24000), 24000, video=True))
    _check_tone(audio.samples, audio.sample_rate, slack=0.1)


def test_a_recording_cut_short_keeps_what_arrived() -> None:
    """A browser upload interrupted midway still gives the audio before the cut."""
    whole = encode("webm", sine(440, 2.0, 48000), 48000)
    audio = decode_audio(whole[: len(whole) // 2])
    assert 0.5 < audio.duration_s < 1.5
    assert dominant_hz(audio.samples.numpy(), audio.sample_rate) == pytest.approx(440.0, abs=3.0)


# ---------------------------------------------------------------- refused
def _refusal(source: bytes | Path, field: str = "prompt_audio") -> str:
    with pytest.raises(AudioDecodeError) as caught:
        decode_field(source, field)
    err = caught.value
    assert rule_for(err).status == 400 and err.field == field
    message = str(err)
    assert message.startswith(f"{field} is not audio that can be decoded (")
    assert message.endswith(f"; send {ACCEPTED_FORMATS}")
    assert ACCEPTED_FORMATS == "WAV, FLAC, OGG/Opus, MP3, WebM, M4A/MP4 or AAC"
    return message


def test_bad_uploads_are_a_400_naming_the_field_and_the_accepted_formats(tmp_path: Path) -> None:
    webm = encode("webm", sine(440, 1.0, 48000), 48000)
    noise = np.random.default_rng(5).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    assert "(empty file)" in _refusal(b"")
    assert "(format not recognised)" in _refusal(noise)
    assert "(format not recognised)" in _refusal(b"this is a text file, not audio" * 10)
    _refusal(webm[:100])  # the start of a header
    # A whole header and no audio yet (cut before the first cluster), and an empty FLAC.
    assert "(no samples)" in _refusal(webm[: webm.index(b"\x1f\x43\xb6\x75") + 4])
    assert "(no samples)" in _refusal(encode("flac", np.zeros(0, np.float32), 48000))
    assert "(the file has no audio stream)" in _refusal(encode("mp4", None, 24000, video=True))
    # A file on disk: its server-side path is not quoted back to the client.
    upload = tmp_path / "gradio-upload-1234.webm"
    upload.write_bytes(noise)
    message = _refusal(upload, "audio")
    assert str(tmp_path) not in message and "1234" not in message


def test_files_that_point_at_other_files_are_not_followed(tmp_path: Path) -> None:
    """FFmpeg's playlist and concat readers would open server files or URLs named in an upload."""
    secret = tmp_path / "secret.wav"
    secret.write_bytes(encode("wav", sine(440, 1.0, 24000), 24000))
    _refusal(f"ffconcat version 1.0\nfile '{secret}'\n".encode())
    _refusal(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile://{secret}\n#EXT-X-ENDLIST\n".encode())


@pytest.mark.parametrize("kind", ["webm", "flac"])
def test_decoding_stops_at_the_duration_cap(kind: str) -> None:
    """A small compressed file can expand to hours: decoding stops at the cap with a 413."""
    data = encode(kind, sine(440, 1.0, 48000), 48000)
    assert decode_audio(data, max_seconds=2.0).duration_s == pytest.approx(1.0, abs=0.03)
    with pytest.raises(AudioTooLongError) as caught:
        decode_field(data, "audio", max_seconds=0.5)
    assert rule_for(caught.value).status == 413 and caught.value.field == "audio"
    assert str(caught.value) == "audio is too long: it lasts more than 0.5 s; decoding stopped there"


# ---------------------------------------------------------------- fuzzing
FUZZ_CASES = 120


def test_damaged_uploads_give_audio_or_a_decode_error_never_a_crash() -> None:
    """Random truncations and bit flips of valid files: either audio comes back or an AudioDecodeError.

    The seed changes every run (EDITX_FUZZ_SEED repeats one) and is printed and in every failure.
    """
    seed = int(os.environ.get("EDITX_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fuzz seed {seed} (EDITX_FUZZ_SEED={seed} repeats this run)")
    rng = np.random.default_rng(seed)
    originals = {kind: encode(kind, sine(440, 0.5, 48000), 48000) for kind in ("webm", "m4a", "aac", "ogg", "mp3")}
    for case in range(FUZZ_CASES):
        kind = list(originals)[case % len(originals)]
        data = bytearray(originals[kind])
        if rng.random() < 0.5:
            data = data[: int(rng.integers(0, len(data)))]
        for _ in range(int(rng.integers(0, 16))):
            if data:
                data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        try:
            audio = decode_audio(bytes(data))
        except AudioDecodeError as exc:
            assert exc.reason and str(exc), f"seed {seed} case {case} ({kind}): empty reason"
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"seed {seed} case {case} ({kind}): {type(exc).__name__}: {exc}")
        assert audio.sample_rate > 0 and audio.samples.dim() == 1 and audio.samples.numel() > 0, (seed, case)
        assert audio.samples.dtype == torch.float32, (seed, case)


# ---------------------------------------------------------------- the UI
def test_ui_audio_upload_reaches_the_decoder_unconverted(tmp_path: Path) -> None:
    """Gradio hands the UI a browser's webm as it is (no ffmpeg binary needed); read_upload decodes it."""
    import gradio as gr
    from gradio.data_classes import FileData

    from ui.app import build_ui

    demo = build_ui(lambda: None)
    inputs = [b for b in demo.blocks.values()
              if isinstance(b, gr.Audio) and b.type == "filepath" and "upload" in (b.sources or [])]
    assert inputs, "the UI has no audio upload"
    recording = tmp_path / "recording.webm"
    recording.write_bytes(encode("webm", sine(440, 1.0, 48000), 48000))
    for component in inputs:
        path = component.preprocess(FileData(path=str(recording)))
        assert path == str(recording)
        audio = read_upload(path, "audio", 10**7)
        _check_tone(audio.samples, audio.sample_rate, slack=0.03)

