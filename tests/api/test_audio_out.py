"""Incremental encoders: what a client receives decodes, at 24 kHz, to the audio that was fed."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest
import soundfile as sf

from api.audio_out import SPEECH_FORMATS, AudioEncoder, encode

RATE = 24000


def split(samples: np.ndarray, rate: int, seconds: float = 0.5) -> list[np.ndarray]:
    """A waveform in pieces of ``seconds``, as a stream delivers it."""
    step = max(1, int(rate * seconds))
    return [samples[i:i + step] for i in range(0, samples.size, step)]


def sweep(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)


def ffmpeg_decode(body: bytes) -> tuple[np.ndarray, int]:
    with av.open(io.BytesIO(body)) as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
        return np.concatenate(frames), stream.codec_context.sample_rate


@pytest.mark.parametrize("fmt", [f for f in SPEECH_FORMATS if f != "pcm"])
def test_streamed_pieces_decode_to_the_fed_duration(fmt: str) -> None:
    audio = sweep(1.7)
    pieces = list(AudioEncoder(fmt, RATE).stream(split(audio, RATE, 0.3)))
    assert len(pieces) >= 3, "bytes must leave as the audio is fed, not all at the end"
    samples, rate = ffmpeg_decode(b"".join(pieces))
    assert rate == (48000 if fmt == "opus" else RATE)  # Opus always decodes at 48 kHz
    assert samples.size / rate == pytest.approx(1.7, abs=0.06)


def test_pcm_is_raw_s16le_mono() -> None:
    audio = sweep(0.5)
    body = b"".join(AudioEncoder("pcm", RATE).stream(split(audio, RATE, 0.1)))
    assert len(body) == 2 * audio.size
    assert np.abs(np.frombuffer(body, "<i2") / 32767 - audio).max() < 1e-4


def test_whole_wav_and_flac_carry_their_length() -> None:
    audio = sweep(1.0)
    for fmt in ("wav", "flac"):
        info = sf.info(io.BytesIO(encode(audio, RATE, fmt)))
        assert (info.samplerate, info.frames) == (RATE, audio.size)


def test_streamed_wav_header_says_length_unknown() -> None:
    body = b"".join(AudioEncoder("wav", RATE).stream(split(sweep(0.5), RATE)))
    assert body[:4] == b"RIFF" and struct.unpack("<I", body[40:44])[0] == 0xFFFFFFFF
    data, rate = sf.read(io.BytesIO(body))  # libsndfile reads such a stream to its end
    assert rate == RATE and data.size == int(0.5 * RATE)


def test_mp3_decodes_close_to_the_input() -> None:
    audio = sweep(1.0)
    samples, _ = ffmpeg_decode(encode(audio, RATE, "mp3"))
    # LAME delays the signal by its priming samples; compare energy, not sample by sample
    assert np.sqrt(np.mean(samples ** 2)) == pytest.approx(np.sqrt(np.mean(audio ** 2)), rel=0.1)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="mp3, opus, aac, flac, wav, pcm"):
        AudioEncoder("ogg", RATE)
