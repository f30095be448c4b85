"""Generation: the client side of the engine loop, and the sampling policy.

A request thread hands its prompt ids to the engine loop (:mod:`runners.scheduler`), which
decodes every running request together, and reads the ids back as they are made. This
module decides how each prompt is sampled (temperature, length cap, audio-only ids for the
random tiny model), queues prompts, turns the LLM's ids into codec ids, and aborts what a
caller leaves behind (a client that went away, a stream closed early).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator

import torch

from runners.config import EngineConfig
from runners.errors import EngineUnavailableError
from runners.text.prompts import system_turn_length
from runners.models.step1.sampling import SamplingParams
from runners.scheduler import EngineLoop, GenerationRequest
from runners.models.tokenizers.tokens import CODEC_VOCAB, LLM_AUDIO_OFFSET, from_llm_ids

log = logging.getLogger("editx.engine")

TINY_MAX_NEW_TOKENS = 170  # ~4 s of audio: a random model rarely says EOS


class Generator:
    """Queues prompts in the engine loop and streams their codec ids back.

    ``loop`` returns the running loop (None while the model is not loaded); ``eos_id`` the
    LLM's end id; ``tiny`` whether the model is the random tiny one; ``aborted`` is told of
    every request given up.
    """

    def __init__(self, config: EngineConfig, loop: Callable[[], EngineLoop | None], eos_id: Callable[[], int],
                 tiny: Callable[[], bool], aborted: Callable[[], None]) -> None:
        self.config = config
        self._loop = loop
        self._eos_id = eos_id
        self._tiny = tiny
        self._aborted = aborted

    def sampling(self, prompt_ids: list[int], seed: int | None) -> SamplingParams:
        """The official sampling (temperature 0.7, prompt + answer within the budget), capped for tiny models."""
        cfg = self.config
        tiny = self._tiny()
        cap = cfg.max_new_tokens
        if cap is None and tiny:
            cap = TINY_MAX_NEW_TOKENS
        budget = cfg.max_total_tokens - len(prompt_ids)
        allowed = self.allowed_ids()
        return SamplingParams(max_new_tokens=min(budget, cap) if cap else budget,
                              temperature=cfg.temperature, seed=seed, allowed_ids=allowed)

    def allowed_ids(self, eos_id: int | None = None) -> torch.Tensor | None:
        """The only ids sampled under audio-only decoding (the audio ids and EOS); None: any id."""
        cfg = self.config
        audio_only = cfg.audio_only_decoding if cfg.audio_only_decoding is not None else self._tiny()
        if not audio_only:
            return None
        return torch.cat([torch.arange(LLM_AUDIO_OFFSET, LLM_AUDIO_OFFSET + CODEC_VOCAB),
                          torch.tensor([self._eos_id() if eos_id is None else eos_id])])

    def request(self, prompt_ids: list[int], seed: int | None) -> GenerationRequest:
        """A request for the loop (not queued yet)."""
        return GenerationRequest(uuid.uuid4().hex, prompt_ids, self.sampling(prompt_ids, seed),
                                 prefix_len=system_turn_length(prompt_ids))

    def submit(self, requests: list[GenerationRequest]) -> list[GenerationRequest]:
        """Queue the pieces of one step (a long text's sentences) together.

        Several pieces go in as one scheduler job: one queue place however many there are, fed
        into free slots in order as they open (a full queue refuses them all: 503). One piece is
        a plain request.
        """
        loop = self._loop()
        if loop is None:
            raise EngineUnavailableError("the model is not loaded; retry shortly")
        if len(requests) == 1:
            return [loop.submit(requests[0])]
        return list(loop.submit_job(requests).requests)

    def abort(self, requests: list[GenerationRequest]) -> None:
        """Give up requests (once each); the loop drops them within one step."""
        loop = self._loop()
        for request in requests:
            if not request.finished and not request.abort_requested and loop is not None:
                request.abort_requested = True
                loop.abort(request.request_id)
                self._aborted()

    def codec_ids(self, request: GenerationRequest, cancel: threading.Event | None) -> Iterator[list[int]]:
        """Codec ids of one request as the loop makes them; leaving early aborts the request."""
        try:
            for llm_ids in request.tokens(cancelled=cancel):
                ids = _audio_ids(llm_ids)
                if ids:
                    yield ids
        finally:
            self.abort([request])


def _audio_ids(llm_ids: list[int]) -> list[int]:
    """Codec ids of the audio ids made; a well-trained model emits nothing else before EOS."""
    audio_ids = [i for i in llm_ids if LLM_AUDIO_OFFSET <= i < LLM_AUDIO_OFFSET + CODEC_VOCAB]
    if len(audio_ids) != len(llm_ids):
        log.warning("dropped %d non-audio ids from the LLM output", len(llm_ids) - len(audio_ids))
    return from_llm_ids(audio_ids)
