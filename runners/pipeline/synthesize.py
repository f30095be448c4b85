"""Synthesis: codec ids to waveform, whole or as the ids arrive.

Whole: the flow and the vocoder run once over all of a piece's ids (the official non-streamed
decode). Streamed: a :class:`~runners.streaming.StreamingDecoder` turns ids into audio chunk by
chunk while the LLM is still generating. Both report the seconds spent in the flow and in the
vocoder. The flow and the vocoder run one call at a time (beside the LLM loop, never inside it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from runners.errors import InvalidInputError

if TYPE_CHECKING:
    from runners.pipeline.prepare import PreparedAudio
    from runners.token2wav import Token2Wav

Piece = tuple[np.ndarray, dict[str, float]]  # samples, and the stage seconds spent on them


def no_audio() -> InvalidInputError:
    return InvalidInputError("the model produced no audio tokens; try another seed or text", field="seed")


class Synthesizer:
    """Token-to-wave for every request of the engine (``token2wav`` returns the loaded decoder)."""

    def __init__(self, token2wav: Callable[[], "Token2Wav"]) -> None:
        self._token2wav = token2wav
        self._lock = threading.Lock()  # flow + vocoder: one call at a time

    def whole(self, codec_ids: list[int], prompt: "PreparedAudio", seed: int | None, speed: float = 1.0) -> Piece:
        """The waveform of all ``codec_ids`` at once."""
        if not codec_ids:
            raise no_audio()
        with self._lock:
            out = self._token2wav().synthesize(codec_ids, prompt.codec_ids, prompt.mel, prompt.speaker,
                                               seed=seed, speed=speed)
        samples = out.waveform.numpy().astype(np.float32).reshape(-1)
        return samples, {"flow": out.flow_seconds, "vocoder": out.vocoder_seconds}

    def streamed(self, ids: Iterator[list[int]], prompt: "PreparedAudio", seed: int | None,
                 speed: float = 1.0) -> Iterator[Piece]:
        """Waveform pieces of codec ids that arrive in chunks (flow and vocoder on growing windows)."""
        from runners.streaming import StreamingDecoder

        decoder = StreamingDecoder(self._token2wav(), prompt.codec_ids, prompt.mel, prompt.speaker,
                                   seed=seed, speed=speed)
        reported = {"flow": 0.0, "vocoder": 0.0}

        def timed(pieces: list[np.ndarray]) -> Iterator[Piece]:
            """Each piece with the flow/vocoder seconds spent since the last piece left."""
            spent = {"flow": sum(t.flow_seconds for t in decoder.timings),
                     "vocoder": sum(t.vocoder_seconds for t in decoder.timings)}
            delta = {stage: spent[stage] - reported[stage] for stage in spent}
            reported.update(spent)
            if not pieces:
                yield np.zeros(0, np.float32), delta
            for i, piece in enumerate(pieces):
                yield piece, (delta if i == 0 else {})

        got_any = False
        for chunk in ids:
            got_any = True
            with self._lock:
                pieces = decoder.push(chunk)
            yield from timed(pieces)
        if not got_any:
            raise no_audio()
        with self._lock:
            pieces = decoder.finish()
        yield from timed(pieces)
