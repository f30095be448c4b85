"""Audio files in the containers clients upload (WebM, M4A, ADTS, ...), made with PyAV from a known signal.

Not a test module: the decoder tests and the service tests both make their uploads here,
so no binary fixtures are kept in the repository.
"""

from __future__ import annotations

import io

import numpy as np

# name → (PyAV container, encoder, sample format the encoder is fed)
KINDS: dict[str, tuple[str, str, str]] = {
    "webm": ("webm", "libopus", "s16"),  # what browsers' MediaRecorder sends
    "ogg": ("ogg", "libopus", "s16"),
    "m4a": ("ipod", "aac", "fltp"),  # phone voice memos
    "mp4": ("mp4", "aac", "fltp"),
    "aac": ("adts", "aac", "fltp"),  # raw ADTS stream
    "mp3": ("mp3", "libmp3lame", "s16p"),
    "flac": ("flac", "flac", "s16"),
    "wav": ("wav", "pcm_s16le", "s16"),
}


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(kind: str, samples: np.ndarray | None, rate: int, *, video: bool = False) -> bytes:
    """``samples`` (N,) mono or (C, N) in [-1, 1] as a ``kind`` file; None = no audio track; ``video`` adds a tiny one."""
    container, codec, sample_fmt = KINDS[kind]
    buf = io.BytesIO()
    import av

    with av.open(buf, "w", format=container) as out:
        vstream = None
        if video:
            vstream = out.add_stream("mpeg4", rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 64, "yuv420p"
        if samples is not None:
            planes = np.atleast_2d(np.clip(samples, -1.0, 1.0)).astype(np.float32)
            layout = "mono" if planes.shape[0] == 1 else "stereo"
            stream = out.add_stream(codec, rate=rate)
            stream.layout, stream.format = layout, sample_fmt
            step = stream.codec_context.frame_size or 1024
            for start in range(0, planes.shape[1], step):
                chunk = planes[:, start:start + step]
                if sample_fmt.startswith("s16"):
                    pcm = (chunk * 32767).round().astype(np.int16)
                    frame = av.AudioFrame.from_ndarray(pcm if sample_fmt == "s16p" else pcm.T.reshape(1, -1),
                                                       format=sample_fmt, layout=layout)
                else:
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
                frame.sample_rate, frame.pts = rate, start
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        if vstream is not None:
            for i in range(5):
                picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * i, np.uint8), format="rgb24")
                picture.pts = i
                out.mux(vstream.encode(picture))
            out.mux(vstream.encode(None))
    return buf.getvalue()


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency (Hz) of a windowed spectrum: a decoder that returns garbage loses the tone."""
    x = np.asarray(samples, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)
