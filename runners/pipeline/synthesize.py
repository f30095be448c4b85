"""Synthesis: codec ids to waveform, whole or as the ids arrive.

Whole: the flow and the vocoder run once over all of a piece's ids (the official non-streamed
decode). Streamed: a :class:`~runners.streaming.StreamingDecoder` turns ids into audio chunk by
chunk while the LLM is still generating. Both report the seconds spent in the flow and in the
vocoder. Both go through the decoder worker (:mod:`runners.decoder_worker`), one thread beside the
LLM loop that runs the decodes of all requests as batches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from runners.errors import InvalidInputError

if TYPE_CHECKING:
    from runners.decoder_worker import DecoderWorker
    from runners.pipeline.prepare import PreparedAudio

Piece = tuple[np.ndarray, dict[str, float]]  # samples, and the stage seconds spent on them


def no_audio() -> InvalidInputError:
    return InvalidInputError("the model produced no audio tokens; try another seed or text", field="seed")


class Synthesizer:
    """Token-to-wave for every request of the engine, through the decoder worker (``worker`` returns it).

    The worker batches the flow and the vocoder of all requests' decodes (whole answers and stream
    chunks alike); each request keeps its own noise, speaker, prompt and vocoder state, so a seeded
    request sounds the same batched or alone.
    """

    def __init__(self, worker: Callable[[], "DecoderWorker"]) -> None:
        self._worker = worker

    def whole(self, codec_ids: list[int], prompt: "PreparedAudio", seed: int | None, speed: float = 1.0,
              cancel: threading.Event | None = None) -> Piece:
        """The waveform of all ``codec_ids`` at once (``cancel`` drops it from the worker's queue)."""
        if not codec_ids:
            raise no_audio()
        return self._worker().synthesize(codec_ids, prompt.codec_ids, prompt.mel, prompt.speaker, seed=seed,
                                         speed=speed, cancel=cancel)

    def streamed(self, ids: Iterator[list[int]], prompt: "PreparedAudio", seed: int | None,
                 speed: float = 1.0) -> Iterator[Piece]:
        """Waveform pieces of codec ids that arrive in chunks (flow and vocoder on growing windows).

        Leaving early closes the decoder session: its pending chunk is dropped from the worker.
        """
        session = self._worker().stream(prompt.codec_ids, prompt.mel, prompt.speaker, seed=seed, speed=speed)
        reported = {"flow": 0.0, "vocoder": 0.0}

        def timed(pieces: list[np.ndarray]) -> Iterator[Piece]:
            """Each piece with the flow/vocoder seconds spent since the last piece left."""
            spent = {"flow": sum(t.flow_seconds for t in session.timings),
                     "vocoder": sum(t.vocoder_seconds for t in session.timings)}
            delta = {stage: spent[stage] - reported[stage] for stage in spent}
            reported.update(spent)
            if not pieces:
                yield np.zeros(0, np.float32), delta
            for i, piece in enumerate(pieces):
                yield piece, (delta if i == 0 else {})

        with session:
            got_any = False
            for chunk in ids:
                got_any = True
                yield from timed(session.push(chunk))
            if not got_any:
                raise no_audio()
            yield from timed(session.finish())
