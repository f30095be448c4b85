"""EditXEngine: the one object that owns every loaded part of the model.

The API, the UI, the tests and the benchmarks all go through this class; there
is never a second copy of the weights. Requests run concurrently: each request's
thread prepares its prompt features, hands its prompt to the engine loop (one
thread that owns the LLM and decodes every running request together, see
:mod:`runners.scheduler`), and turns the ids it gets back into a waveform, whole
or chunk by chunk as they come. Loading, unloading and offloading are exclusive:
they wait for the requests in flight, and a request arriving meanwhile waits for
them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from runners import privacy
from runners.audio import DECODER_RATE, TOKENIZER_RATE, Audio, limit_peak
from runners.config import EngineConfig
from runners.edit_vocab import VOCABULARY, EditVocabulary, validate_edit
from runners.lifecycle import EngineLifecycle
from runners.errors import EngineUnavailableError, InputTooLargeError, InvalidInputError
from runners.model_store import ModelPaths, resolve_model_root
from runners.prompt_cache import PromptCache, PromptFeatures, audio_key
from runners.prompts import PromptBuilder, clone_speaker_id, edit_instruction, system_turn_length
from runners.sampling import SamplingParams
from runners.scheduler import EngineLoop, GenerationRequest, LLMRunner, Scheduler, SchedulerOutput, SchedulerStats
from runners.transcriber import Transcriber, TranscriberConfig, Transcription
from runners.tokens import CODEC_VOCAB, LLM_AUDIO_OFFSET, TOKENS_PER_SECOND, from_llm_ids

log = logging.getLogger("editx.engine")

Progress = Callable[[str, float], None]  # (stage description, fraction done 0..1)
TINY_MAX_NEW_TOKENS = 170  # ~4 s of audio
PREFILL_TOKENS_PER_STEP = 512  # prompt tokens per engine step: a long prompt never stalls decoding for long
SENTENCE_MAX_CHARS = 300  # a clone text longer than this is generated sentence by sentence, as one batch


class EngineEvents:
    """What the engine reports as it works; the service turns it into metrics (these do nothing)."""

    def stage(self, name: str, seconds: float) -> None: ...

    def first_chunk(self, seconds: float) -> None: ...

    def aborted(self) -> None: ...

    def step(self, batch_size: int, queue_depth: int, new_tokens: int) -> None: ...


@dataclass
class AudioChunk:
    """One piece of a streamed waveform; concatenated in ``index`` order they are the whole answer."""

    samples: np.ndarray  # float32 mono
    sample_rate: int
    index: int
    last: bool = False

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


@dataclass
class PreparedAudio:
    """Everything derived from one input waveform that generation needs."""

    audio: Audio  # mono, peak-limited to 0.6, original sample rate
    codec_ids: list[int]  # interleaved vq02/vq06 codec ids of the trimmed 16 kHz audio
    mel: torch.Tensor  # (1, T, 80) 24 kHz mel of the untrimmed audio
    speaker: torch.Tensor  # (1, 192) CAM++ embedding


@dataclass
class Synthesis:
    """A generated waveform plus what it took to make it."""

    samples: np.ndarray  # float32 mono
    sample_rate: int
    generated_tokens: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    iterations: int = 1

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


def _noop_progress(stage: str, fraction: float) -> None:
    return None


class EditXEngine(EngineLifecycle):
    """Load once (see :mod:`runners.lifecycle`), then tokenize, clone and edit."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        super().__init__(config or EngineConfig.from_env())
        cfg = self.config
        self.paths: ModelPaths | None = None
        self._prepare_lock = threading.Lock()  # tokenizer + speaker model: one prompt at a time
        self._decode_lock = threading.Lock()  # flow + vocoder: one chunk at a time, beside the LLM loop
        self._loop: EngineLoop | None = None
        self._tokens_reported = 0
        self.events = EngineEvents()
        self.cache = PromptCache(
            cfg.cache_dir or None,
            max_entries=cfg.cache_max_entries,
            max_disk_bytes=cfg.cache_max_disk_mb * 1024 * 1024,
            enabled=cfg.cache_enabled,
        )
        # Whisper loads on its first use, not with the engine.
        self.transcriber = Transcriber(TranscriberConfig.from_env())

    # ------------------------------------------------------------------ loading
    @property
    def vocabulary(self) -> EditVocabulary:
        return VOCABULARY

    @property
    def is_tiny(self) -> bool:
        """True for a random-weight root written by runners.tiny (its output is noise)."""
        from runners.tiny import TINY_MARKER

        if self.config.is_tiny:
            return True
        return self.paths is not None and (self.paths.root / TINY_MARKER).is_file()

    def resolve_paths(self) -> ModelPaths:
        cfg = self.config
        awq = cfg.llm_quantization == "awq"
        if cfg.is_tiny:
            from runners.tiny import TINY_MARKER, build_tiny_model_root

            root = cfg.tiny_root()
            if not (root / TINY_MARKER).is_file():
                log.warning("EDITX_MODEL_PATH=tiny: writing a random-weight model to %s (output is noise)", root)
                build_tiny_model_root(root)
            if awq and ModelPaths(root, awq=True).awq_dir is None:
                from runners.tiny import write_tiny_awq_part

                log.warning("EDITX_LLM_QUANTIZATION=awq: writing the tiny AWQ-4bit checkpoint to %s", root)
                write_tiny_awq_part(root)
            return ModelPaths(root, cfg.funasr_id, awq).check()
        return resolve_model_root(cfg.model_path, cfg.model_source, funasr_id=cfg.funasr_id, awq=awq)

    def _load_parts(self) -> None:
        from runners.audio_tokenizer import AudioTokenizer
        from runners.llm import Step1LM
        from runners.prompt_features import SpeakerEncoder
        from runners.text_tokenizer import TextTokenizer
        from runners.token2wav import Token2Wav

        paths = self.paths = self.resolve_paths()
        cfg = self.config
        text_tokenizer = TextTokenizer(paths.text_tokenizer_dir)
        self._parts = {
            "audio_tokenizer": AudioTokenizer(paths, device=self.device),
            "text_tokenizer": text_tokenizer,
            "prompt_builder": PromptBuilder(text_tokenizer),
            "llm": Step1LM.from_pretrained(paths.llm_weights_dir, device=self.device, dtype=cfg.llm_torch_dtype(),
                                           quantization=cfg.llm_quantization),
            "speaker_encoder": SpeakerEncoder(paths.decoder_dir / "campplus.onnx", device=self.device),
            "token2wav": Token2Wav(paths.decoder_dir, device=self.device, dtype=cfg.decoder_torch_dtype()),
        }

    def _start_serving(self) -> None:
        self._start_loop()

    def _stop_serving(self) -> None:
        self._stop_loop()

    def _release_parts(self) -> None:
        self.transcriber.unload()

    def _offload_refusal(self) -> str | None:
        from runners.quantization import offload_supported

        if offload_supported(self.config.llm_quantization):
            return None
        return (f"offload of a {self.config.llm_quantization} LLM unloads instead: bitsandbytes weights are not "
                "moved between devices")

    def _start_loop(self) -> None:
        """The engine loop over the loaded LLM: one slot per running request, the cache allocated once."""
        from runners.cuda_graphs import decode_function

        llm = self._parts["llm"]
        cfg = self.config
        from runners.quantization import cuda_graphs_mode

        decode = decode_function(llm, cuda_graphs_mode(cfg.llm_quantization, cfg.cuda_graphs), cfg.max_batch)
        runner = LLMRunner(llm, cfg.max_batch, cfg.max_total_tokens, decode=decode,
                           prefix_tokens=cfg.prefix_cache_tokens)
        scheduler = Scheduler(cfg.max_batch, cfg.max_queue, PREFILL_TOKENS_PER_STEP, eos_id=llm.eos_id,
                              prefix_cached=runner.prefix_lookup)
        sync_every = 4 if self.device.type == "cuda" else 1
        self._tokens_reported = 0
        self._loop = EngineLoop(runner, scheduler, sync_every=sync_every, on_step=self._on_step).start()

    def _stop_loop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def _on_step(self, plan: SchedulerOutput, seconds: float) -> None:
        loop = self._loop
        if loop is None:
            return
        scheduler = loop.scheduler  # every step: plain counters, not the stats model
        made = scheduler.generated_tokens
        new_tokens, self._tokens_reported = made - self._tokens_reported, made
        self.events.step(len(plan.decodes), scheduler.get_request_counts()[1], new_tokens)

    # ------------------------------------------------------------- validation
    def check_audio(self, audio: Audio, name: str = "audio") -> Audio:
        """Reject audio the model cannot use, with a message naming the problem."""
        if audio.samples.numel() == 0 or audio.duration_s < 0.1:
            raise InvalidInputError(f"{name} is empty or shorter than 0.1 s", field=name)
        if not bool(torch.isfinite(audio.samples).all()):
            raise InvalidInputError(f"{name} contains NaN or infinite samples", field=name)
        if float(audio.samples.abs().max()) < 1e-4:
            raise InvalidInputError(f"{name} is silent: no sample rises above -80 dBFS", field=name)
        if audio.duration_s > self.config.max_audio_s:
            raise InputTooLargeError(
                f"{name} is {audio.duration_s:.1f} s long; the limit is {self.config.max_audio_s:g} s "
                "(set EDITX_MAX_AUDIO_S to change it)",
                field=name,
            )
        return audio

    def check_text(self, text: str | None, name: str, required: bool = True) -> str:
        value = (text or "").strip()
        if required and not value:
            raise InvalidInputError(f"{name} is empty", field=name)
        if len(value) > self.config.max_text_chars:
            raise InputTooLargeError(
                f"{name} has {len(value)} characters; the limit is {self.config.max_text_chars}", field=name
            )
        return value

    def _check_budget(self, prompt_ids: list[int], expected_output_s: float) -> int:
        """Return the generation length cap; reject prompts that leave no room to answer."""
        budget = self.config.max_total_tokens
        needed = len(prompt_ids) + int(expected_output_s * TOKENS_PER_SECOND)
        if len(prompt_ids) >= budget or needed > budget:
            raise InputTooLargeError(
                f"the request needs about {needed} LLM tokens (prompt {len(prompt_ids)}); the limit is {budget}. "
                "Use shorter audio or text.",
                field="audio",
            )
        return budget

    # ---------------------------------------------------------------- stages
    def cache_settings(self) -> str:
        """What besides the samples changes the prompt features: the model files used.

        Not the LLM variant (EDITX_LLM_QUANTIZATION): the features come from the audio
        tokenizer, the mel and the speaker model, which are the same for every variant.
        """
        paths = self.paths or self.resolve_paths()
        return f"v1|{paths.root}|{self.config.funasr_id}"

    def prepare(self, audio: Audio) -> PreparedAudio:
        """Tokens, mel and speaker embedding of one waveform (the 'prompt features').

        Served from the prompt cache when the same samples were seen before: a hit
        runs neither the tokenizer nor the mel nor the speaker model. A miss runs them
        one prompt at a time, beside (never inside) the LLM loop.
        """
        from runners.prompt_features import prompt_mel

        with self._busy():
            limited = Audio(limit_peak(audio.samples), audio.sample_rate)
            key = audio_key(limited.samples, limited.sample_rate, self.cache_settings())
            hit = self.cache.get(key)
            if hit is not None:
                log.info("prompt cache hit (%.2f s of audio)", limited.duration_s)
                return PreparedAudio(limited, list(hit.codec_ids), hit.mel, hit.speaker)
            with self._prepare_lock:
                start = time.perf_counter()
                tokens = self._part("audio_tokenizer").tokenize(limited)
                mel = prompt_mel(limited.resampled(DECODER_RATE).samples)
                speaker = self._part("speaker_encoder")(limited.resampled(TOKENIZER_RATE).samples)
                elapsed = time.perf_counter() - start
            self.cache.put(key, PromptFeatures(tokens.codec_ids, mel, speaker, compute_s=elapsed))
            log.info("prompt features computed in %.2f s (cache miss)", elapsed)
            return PreparedAudio(limited, tokens.codec_ids, mel, speaker)

    def clear_prompt_cache(self) -> int:
        """Empty the prompt cache (memory and disk) and its statistics; returns how many entries went."""
        dropped = self.cache.clear()
        log.info("prompt cache cleared on request (%d entries)", dropped)
        return dropped

    def transcribe(self, audio: Audio, language: str | None = None) -> Transcription:
        """What is said in ``audio`` (Whisper), served from the prompt cache when seen before."""
        self.check_audio(audio)
        with self._busy():
            settings = f"asr|{self.transcriber.config.model}|{self.transcriber.config.beam_size}|{language or 'auto'}"
            key = audio_key(audio.samples, audio.sample_rate, settings)
            hit = self.cache.get(key, need_features=False, need_transcript=True)
            if hit is not None:
                log.info("transcript cache hit (%.2f s of audio)", audio.duration_s)
                return Transcription.model_validate_json(hit.transcript or "{}")
            result = self.transcriber.transcribe(audio, language)
            self.cache.put(key, PromptFeatures(transcript=result.model_dump_json(), compute_s=result.elapsed_s))
            return result

    def resolve_transcript(self, text: str | None, audio: Audio, field: str) -> str:
        """The given transcript, or (when empty and auto-transcription is on) Whisper's."""
        given = self.check_text(text, field, required=False)
        if given:
            return given
        if not self.config.auto_transcribe:
            raise InvalidInputError(
                f"{field} is empty: give the transcript of the audio (auto-transcription is off; "
                "set EDITX_AUTO_TRANSCRIBE=1 to have it transcribed)",
                field=field,
            )
        heard = self.transcribe(audio).text
        if not heard:
            raise InvalidInputError(f"{field} is empty and no speech was recognized in the audio: give the transcript",
                                    field=field)
        log.info("auto-transcribed %s (%s)", field, privacy.shown(heard))
        return self.check_text(heard, field)

    def tokenize(self, audio: Audio) -> list[int]:
        """Codec ids (0..5119, interleaved 2:3) of an audio, as the LLM sees it."""
        self.check_audio(audio)
        with self._busy():
            limited = Audio(limit_peak(audio.samples), audio.sample_rate)
            return self._part("audio_tokenizer").tokenize(limited).codec_ids

    # ------------------------------------------------------------ generation
    def _sampling(self, prompt_ids: list[int], seed: int | None) -> SamplingParams:
        llm = self._part("llm")
        cfg = self.config
        cap = cfg.max_new_tokens
        if cap is None and self.is_tiny:
            cap = TINY_MAX_NEW_TOKENS  # a random model rarely says EOS: keep its answers short
        budget = cfg.max_total_tokens - len(prompt_ids)
        audio_only = cfg.audio_only_decoding if cfg.audio_only_decoding is not None else self.is_tiny
        allowed = None
        if audio_only:
            allowed = torch.cat([torch.arange(LLM_AUDIO_OFFSET, LLM_AUDIO_OFFSET + CODEC_VOCAB),
                                 torch.tensor([llm.eos_id])])
        return SamplingParams(max_new_tokens=min(budget, cap) if cap else budget,
                              temperature=cfg.temperature, seed=seed, allowed_ids=allowed)

    def _submit(self, prompt_ids: list[int], seed: int | None) -> GenerationRequest:
        """Queue a prompt in the engine loop (503 at once when the queue is full)."""
        self._part("llm")
        loop = self._loop
        if loop is None:
            raise EngineUnavailableError("the model is not loaded; retry shortly")
        request = GenerationRequest(uuid.uuid4().hex, prompt_ids, self._sampling(prompt_ids, seed),
                                    prefix_len=system_turn_length(prompt_ids))
        return loop.submit(request)

    def _abort(self, requests: list[GenerationRequest]) -> None:
        loop = self._loop
        for request in requests:
            if not request.finished and not request.abort_requested and loop is not None:
                request.abort_requested = True
                loop.abort(request.request_id)
                self.events.aborted()

    @staticmethod
    def _audio_ids(llm_ids: list[int]) -> list[int]:
        """Codec ids of the audio ids made; a well-trained model emits nothing else before EOS."""
        audio_ids = [i for i in llm_ids if LLM_AUDIO_OFFSET <= i < LLM_AUDIO_OFFSET + CODEC_VOCAB]
        if len(audio_ids) != len(llm_ids):
            log.warning("dropped %d non-audio ids from the LLM output", len(llm_ids) - len(audio_ids))
        return from_llm_ids(audio_ids)

    def _stream_ids(self, request: GenerationRequest, cancel: threading.Event | None) -> Iterator[list[int]]:
        """Codec ids of one request as the loop makes them; leaving early aborts the request."""
        try:
            for llm_ids in request.tokens(cancelled=cancel):
                ids = self._audio_ids(llm_ids)
                if ids:
                    yield ids
        finally:
            self._abort([request])

    def _collect(self, request: GenerationRequest, cancel: threading.Event | None) -> list[int]:
        return [i for ids in self._stream_ids(request, cancel) for i in ids]

    def clone_prompt_ids(self, prompt: PreparedAudio, prompt_text: str, target_text: str) -> list[int]:
        speaker = clone_speaker_id(prompt_text, prompt.audio.samples.numpy())
        ids = self._part("prompt_builder").clone(prompt_text, prompt.codec_ids, target_text, speaker)
        self._check_budget(ids, expected_output_s=0)
        return ids

    def edit_prompt_ids(self, prompt: PreparedAudio, audio_text: str | None, edit_type: str,
                        edit_info: str | None, target_text: str | None = None) -> list[int]:
        instruction = edit_instruction(edit_type, edit_info, audio_text, target_text)
        ids = self._part("prompt_builder").edit(instruction, prompt.codec_ids)
        self._check_budget(ids, expected_output_s=prompt.audio.duration_s)
        return ids

    def generate_clone(
        self, prompt: PreparedAudio, prompt_text: str, target_text: str, seed: int | None = None
    ) -> list[int]:
        """Codec ids of ``target_text`` spoken in the prompt's voice."""
        with self._busy():
            return self._collect(self._submit(self.clone_prompt_ids(prompt, prompt_text, target_text), seed), None)

    def generate_edit(
        self,
        prompt: PreparedAudio,
        audio_text: str | None,
        edit_type: str,
        edit_info: str | None,
        target_text: str | None = None,
        seed: int | None = None,
    ) -> list[int]:
        """Codec ids of the edited audio."""
        with self._busy():
            ids = self.edit_prompt_ids(prompt, audio_text, edit_type, edit_info, target_text)
            return self._collect(self._submit(ids, seed), None)

    def decode(
        self, codec_ids: list[int], prompt: PreparedAudio, seed: int | None = None, speed: float = 1.0
    ) -> tuple[np.ndarray, dict[str, float]]:
        """24 kHz float32 waveform of generated codec ids in the prompt's voice, and seconds per stage."""
        if not codec_ids:
            raise InvalidInputError("the model produced no audio tokens; try another seed or text", field="seed")
        with self._busy(), self._decode_lock:
            out = self._part("token2wav").synthesize(codec_ids, prompt.codec_ids, prompt.mel, prompt.speaker,
                                                      seed=seed, speed=speed)
            samples = out.waveform.numpy().astype(np.float32).reshape(-1)
            return samples, {"flow": out.flow_seconds, "vocoder": out.vocoder_seconds}

    def _decode_stream(self, ids: Iterator[list[int]], prompt: PreparedAudio, seed: int | None,
                       speed: float, timings: dict[str, float]) -> Iterator[np.ndarray]:
        """Waveform pieces of codec ids that arrive in chunks (flow + vocoder on growing chunks)."""
        from runners.streaming import StreamingDecoder

        decoder = StreamingDecoder(self._part("token2wav"), prompt.codec_ids, prompt.mel, prompt.speaker,
                                   seed=seed, speed=speed)
        got_any = False
        for chunk in ids:
            got_any = True
            with self._decode_lock:
                t = time.perf_counter()
                pieces = decoder.push(chunk)
                timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t
            yield from pieces
        if not got_any:
            raise InvalidInputError("the model produced no audio tokens; try another seed or text", field="seed")
        with self._decode_lock:
            t = time.perf_counter()
            pieces = decoder.finish()
            timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t
        yield from pieces

    # ------------------------------------------------------------- requests
    def _sentences(self, text: str) -> list[str]:
        if len(text) <= SENTENCE_MAX_CHARS:
            return [text]
        from runners.text_split import split_text

        return split_text(text, max_chars=SENTENCE_MAX_CHARS)

    def _check_clone(self, prompt_audio: Audio, prompt_text: str | None, target_text: str, speed: float,
                     progress: Progress) -> tuple[str, str]:
        self.check_audio(prompt_audio, "prompt_audio")
        target_text = self.check_text(target_text, "target_text")
        check_speed(speed)
        if not (prompt_text or "").strip():
            progress("transcribing prompt audio", 0.0)
        return self.resolve_transcript(prompt_text, prompt_audio, "prompt_text"), target_text

    def _start_clone(self, prompt_audio: Audio, prompt_text: str, target_text: str, seed: int | None,
                     progress: Progress, timings: dict[str, float]) -> tuple[PreparedAudio, list[GenerationRequest]]:
        """Prepare the prompt and queue every sentence of the text at once (they decode as one batch)."""
        progress("loading model", 0.0)
        self._part("llm")
        progress("tokenizing prompt audio", 0.1)
        t = time.perf_counter()
        prompt = self.prepare(prompt_audio)
        timings["prepare"] = time.perf_counter() - t
        self.events.stage("prepare", timings["prepare"])
        sentences = self._sentences(target_text)
        prompts = [self.clone_prompt_ids(prompt, prompt_text, s) for s in sentences]
        progress("generating speech tokens", 0.3)
        requests: list[GenerationRequest] = []
        try:
            for k, ids in enumerate(prompts):
                requests.append(self._submit(ids, _piece_seed(seed, k)))
        except BaseException:
            self._abort(requests)
            raise
        if len(sentences) > 1:
            log.info("clone text of %d characters split into %d sentences, generated together",
                     len(target_text), len(sentences))
        return prompt, requests

    def clone(
        self,
        prompt_audio: Audio,
        prompt_text: str | None,
        target_text: str,
        seed: int | None = None,
        progress: Progress = _noop_progress,
        *,
        speed: float = 1.0,
        cancel: threading.Event | None = None,
    ) -> Synthesis:
        """Speak ``target_text`` in the voice of ``prompt_audio`` (zero-shot clone).

        An empty ``prompt_text`` is transcribed when auto-transcription is on. A long
        text is split into sentences that are generated together and joined in order.
        ``speed`` (0.25–4) stretches time without changing pitch. Setting ``cancel``
        aborts the request within one engine step.
        """
        prompt_text, target_text = self._check_clone(prompt_audio, prompt_text, target_text, speed, progress)
        timings: dict[str, float] = {"prepare": 0.0, "llm": 0.0, "flow": 0.0, "vocoder": 0.0}
        with self._busy():
            prompt, requests = self._start_clone(prompt_audio, prompt_text, target_text, seed, progress, timings)
            pieces: list[np.ndarray] = []
            tokens = 0
            try:
                for k, request in enumerate(requests):
                    t = time.perf_counter()
                    codec_ids = self._collect(request, cancel)
                    timings["llm"] += time.perf_counter() - t
                    progress("decoding waveform", 0.3 + 0.7 * (k + 0.5) / len(requests))
                    samples, stages = self.decode(codec_ids, prompt, _piece_seed(seed, k), speed)
                    for stage, seconds in stages.items():
                        timings[stage] += seconds
                    pieces.append(samples)
                    tokens += len(codec_ids)
            finally:
                self._abort(requests)
            progress("done", 1.0)
        syn = Synthesis(_join(pieces), DECODER_RATE, tokens, timings)
        self._report("clone", syn)
        return syn

    def clone_stream(
        self,
        prompt_audio: Audio,
        prompt_text: str | None,
        target_text: str,
        seed: int | None = None,
        progress: Progress = _noop_progress,
        *,
        speed: float = 1.0,
        cancel: threading.Event | None = None,
    ) -> Iterator[AudioChunk]:
        """Like :meth:`clone`, but the audio comes in chunks while the ids are still being made.

        Validation, transcription, prompt preparation and queueing happen before this
        returns (so a bad request raises here); closing the iterator aborts the request.
        """
        prompt_text, target_text = self._check_clone(prompt_audio, prompt_text, target_text, speed, progress)
        stream = self._clone_chunks(prompt_audio, prompt_text, target_text, seed, progress, speed, cancel)
        next(stream)  # runs up to the queueing of the sentences
        return stream

    def _clone_chunks(self, prompt_audio: Audio, prompt_text: str, target_text: str, seed: int | None,
                      progress: Progress, speed: float, cancel: threading.Event | None,
                      ) -> Iterator[AudioChunk]:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        with self._busy():
            prompt, requests = self._start_clone(prompt_audio, prompt_text, target_text, seed, progress, timings)
            yield None  # type: ignore[misc]  # primed: the caller gets the stream from here on
            try:
                sentences = (
                    self._decode_stream(self._stream_ids(request, cancel), prompt, _piece_seed(seed, k), speed,
                                        timings)
                    for k, request in enumerate(requests)
                )
                yield from self._chunks(_crossfaded(sentences), started, "clone")
            finally:
                self._abort(requests)

    def _chunks(self, pieces: Iterator[np.ndarray], started: float, what: str) -> Iterator[AudioChunk]:
        """Number the pieces and pass each on at once; an empty chunk marked ``last`` ends the stream.

        Nothing is held back to mark the last piece: the first audio leaves as soon as it exists.
        """
        index, total = 0, 0
        for piece in pieces:
            if piece.size == 0:
                continue
            if index == 0:
                self.events.first_chunk(time.perf_counter() - started)
            yield AudioChunk(piece, DECODER_RATE, index)
            index += 1
            total += piece.size
        yield AudioChunk(np.zeros(0, np.float32), DECODER_RATE, index, last=True)
        log.info("%s (streamed): %.2f s of audio in %d chunks in %.2f s", what, total / DECODER_RATE, index,
                 time.perf_counter() - started, extra={"stage": "request"})

    def _check_edit(self, audio: Audio, audio_text: str | None, edit_type: str, edit_info: str | None,
                    target_text: str | None, n_edit_iter: int, progress: Progress,
                    ) -> tuple[str | None, str | None, str | None]:
        self.check_audio(audio)
        edit_info = validate_edit(edit_type, edit_info, target_text)
        spec = self.vocabulary.spec(edit_type)
        target_text = self.check_text(target_text, "target_text", required=spec.needs_target_text)
        if spec.needs_transcript:
            if not (audio_text or "").strip():
                progress("transcribing input audio", 0.0)
            audio_text = self.resolve_transcript(audio_text, audio, "audio_text")
        else:
            audio_text = self.check_text(audio_text, "audio_text", required=False)
        if not 1 <= n_edit_iter <= 5:
            raise InvalidInputError(f"n_edit_iter must be between 1 and 5 (got {n_edit_iter})", field="n_edit_iter")
        return audio_text, edit_info, target_text

    def edit(
        self,
        audio: Audio,
        audio_text: str | None,
        edit_type: str,
        edit_info: str | None = None,
        target_text: str | None = None,
        n_edit_iter: int = 1,
        seed: int | None = None,
        progress: Progress = _noop_progress,
        *,
        cancel: threading.Event | None = None,
    ) -> Synthesis:
        """Edit ``audio``; each further iteration edits the previous output again."""
        audio_text, edit_info, target_text = self._check_edit(audio, audio_text, edit_type, edit_info,
                                                              target_text, n_edit_iter, progress)
        timings = {"prepare": 0.0, "llm": 0.0, "flow": 0.0, "vocoder": 0.0}
        current, total_tokens = audio, 0
        samples = np.zeros(0, dtype=np.float32)
        with self._busy():
            for k in range(n_edit_iter):
                samples, tokens, audio_text = self._edit_pass(
                    current, audio_text, edit_type, edit_info, target_text, k, n_edit_iter, seed, progress,
                    timings, cancel)
                total_tokens += tokens
                current = Audio(torch.from_numpy(samples.copy()), DECODER_RATE)
            progress("done", 1.0)
        syn = Synthesis(samples, DECODER_RATE, total_tokens, timings, iterations=n_edit_iter)
        self._report(f"edit {edit_type}" + (f"/{edit_info}" if edit_info and privacy.enabled() else ""), syn)
        return syn

    def _edit_pass(self, current: Audio, audio_text: str | None, edit_type: str, edit_info: str | None,
                   target_text: str | None, k: int, n: int, seed: int | None, progress: Progress,
                   timings: dict[str, float], cancel: threading.Event | None,
                   ) -> tuple[np.ndarray, int, str | None]:
        """One edit pass, whole; returns the audio, its id count and the transcript of what it says."""
        prompt, request = self._start_edit_pass(current, audio_text, edit_type, edit_info, target_text, k, n,
                                                seed, progress, timings)
        t = time.perf_counter()
        codec_ids = self._collect(request, cancel)
        timings["llm"] += time.perf_counter() - t
        progress(f"pass {k + 1}/{n}: decoding waveform", (k + 0.8) / n)
        samples, stages = self.decode(codec_ids, prompt, _piece_seed(seed, k))
        for stage, seconds in stages.items():
            timings[stage] += seconds
        # The next pass edits this output; its transcript is what was said now.
        return samples, len(codec_ids), target_text if edit_type == "paralinguistic" else audio_text

    def _start_edit_pass(self, current: Audio, audio_text: str | None, edit_type: str, edit_info: str | None,
                         target_text: str | None, k: int, n: int, seed: int | None, progress: Progress,
                         timings: dict[str, float]) -> tuple[PreparedAudio, GenerationRequest]:
        progress(f"pass {k + 1}/{n}: tokenizing audio", k / n)
        t = time.perf_counter()
        prompt = self.prepare(current)
        timings["prepare"] = timings.get("prepare", 0.0) + time.perf_counter() - t
        self.events.stage("prepare", time.perf_counter() - t)
        progress(f"pass {k + 1}/{n}: generating speech tokens", (k + 0.3) / n)
        ids = self.edit_prompt_ids(prompt, audio_text, edit_type, edit_info, target_text)
        return prompt, self._submit(ids, _piece_seed(seed, k))

    def edit_stream(
        self,
        audio: Audio,
        audio_text: str | None,
        edit_type: str,
        edit_info: str | None = None,
        target_text: str | None = None,
        n_edit_iter: int = 1,
        seed: int | None = None,
        progress: Progress = _noop_progress,
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[AudioChunk]:
        """Like :meth:`edit`; the last pass streams (earlier passes must be whole to be edited again)."""
        audio_text, edit_info, target_text = self._check_edit(audio, audio_text, edit_type, edit_info,
                                                              target_text, n_edit_iter, progress)
        stream = self._edit_chunks(audio, audio_text, edit_type, edit_info, target_text, n_edit_iter, seed,
                                   progress, cancel)
        next(stream)
        return stream

    def _edit_chunks(self, audio: Audio, audio_text: str | None, edit_type: str, edit_info: str | None,
                     target_text: str | None, n: int, seed: int | None, progress: Progress,
                     cancel: threading.Event | None) -> Iterator[AudioChunk]:
        started = time.perf_counter()
        timings: dict[str, float] = {"prepare": 0.0, "llm": 0.0, "flow": 0.0, "vocoder": 0.0}
        with self._busy():
            yield None  # type: ignore[misc]
            current = audio
            for k in range(n - 1):
                samples, _, audio_text = self._edit_pass(current, audio_text, edit_type, edit_info, target_text,
                                                         k, n, seed, progress, timings, cancel)
                current = Audio(torch.from_numpy(samples.copy()), DECODER_RATE)
            prompt, request = self._start_edit_pass(current, audio_text, edit_type, edit_info, target_text,
                                                    n - 1, n, seed, progress, timings)
            try:
                pieces = self._decode_stream(self._stream_ids(request, cancel), prompt, _piece_seed(seed, n - 1),
                                             1.0, timings)
                yield from self._chunks(pieces, started, f"edit {edit_type}")
            finally:
                self._abort([request])

    def _report(self, what: str, syn: Synthesis) -> None:
        for stage, seconds in syn.timings.items():
            self.events.stage(stage, seconds)
        _log_synthesis(what, syn)

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, object]:
        """Plain-data view of the engine for /status and the UI."""
        cfg = self.config
        return {
            "state": self.state,
            "error": self.error,
            "device": str(self.device),
            "llm_dtype": str(cfg.llm_torch_dtype()).removeprefix("torch."),
            "decoder_dtype": str(cfg.decoder_torch_dtype()).removeprefix("torch."),
            "model_path": cfg.model_path,
            "model_root": str(self.paths.root) if self.paths else None,
            "tiny_random_weights": self.is_tiny,
            "load_count": self.load_count,
            "load_seconds": self.load_seconds,
            "ready": self.ready,
            "lazy_load": cfg.lazy_load,
            "idle_unload_s": cfg.idle_unload_s,
            "idle_action": cfg.idle_action,
            "idle_s": round(self.idle_seconds(), 1),
            "time_until_unload_s": self._time_until_unload(),
            "memory": self.memory(),
            "last_unload": self.last_unload,
            "cache": self.cache.stats().model_dump(),
            "auto_transcribe": cfg.auto_transcribe,
            "asr": self.transcriber.info().model_dump(),
            "scheduler": self.scheduler_stats().model_dump(),
            **self._llm_status(),
        }

    def scheduler_stats(self) -> SchedulerStats:
        """Running and waiting requests, batch size, ids made and their rate (zeros when not loaded)."""
        loop = self._loop
        if loop is None:
            cfg = self.config
            return SchedulerStats(running=0, waiting=0, max_batch=cfg.max_batch, max_queue=cfg.max_queue,
                                  batch_size=0, steps=0, generated_tokens=0, aborted=0, finished=0,
                                  tokens_per_s=0.0)
        stats = loop.scheduler.make_stats()
        store = getattr(loop.runner, "prefixes", None)
        if store is not None:
            stats.prefix_store_entries, stats.prefix_store_tokens = len(store), store.tokens
            stats.prefix_store_mb = round(store.nbytes / 2**20, 1)
        return stats

    def _llm_status(self) -> dict[str, object]:
        """The LLM variant, its weight memory once loaded, and what idle does with it."""
        from runners.quantization import llm_status

        llm = self._parts.get("llm")
        return llm_status(self.config.llm_quantization, getattr(llm, "model", None), self.config.idle_action)

    @property
    def model_root(self) -> Path | None:
        return self.paths.root if self.paths else None


SPEED_RANGE = (0.25, 4.0)
FADE_S = 0.02  # sentences of a long text meet with a fade this long


def check_speed(speed: float) -> float:
    low, high = SPEED_RANGE
    if not (low <= speed <= high):
        raise InvalidInputError(f"speed must be between {low:g} and {high:g} (got {speed:g})", field="speed")
    return speed


def _piece_seed(seed: int | None, k: int) -> int | None:
    """Sentence k (or edit pass k) of a seeded request draws from seed + k: the first one from seed itself."""
    return None if seed is None else (seed + k) % 2**32


def _join(pieces: list[np.ndarray]) -> np.ndarray:
    """Sentences in order, each overlapping the next by FADE_S with a linear cross-fade."""
    return np.concatenate(list(_crossfaded(iter([p]) for p in pieces)) or [np.zeros(0, np.float32)])


def _crossfaded(sentences: Iterator[Iterator[np.ndarray]]) -> Iterator[np.ndarray]:
    """Waveform pieces of consecutive sentences, each sentence's last FADE_S mixed into the next one's first.

    Works on streams: it holds back only FADE_S of audio at a time, so the non-streamed
    join and the streamed one give the same samples.
    """
    n = int(FADE_S * DECODER_RATE)
    fade_in = np.linspace(0.0, 1.0, n, dtype=np.float32)
    tail: np.ndarray | None = None
    for sentence in sentences:
        held = np.zeros(0, np.float32)
        for piece in sentence:
            held = np.concatenate([held, piece.astype(np.float32, copy=False)])
            if tail is not None:
                if held.size < tail.size:
                    continue
                m = tail.size
                mixed = tail * fade_in[::-1][-m:] + held[:m] * fade_in[:m] if m else held[:0]
                held = np.concatenate([mixed, held[m:]])
                tail = None
            if held.size > n:
                yield held[:-n]
                held = held[-n:]
        if tail is not None:  # this sentence was shorter than the fade: keep the previous tail whole
            held = np.concatenate([tail, held])
        tail = held
    if tail is not None and tail.size:
        yield tail


def _log_synthesis(what: str, syn: Synthesis) -> None:
    """One line per finished request, with the time of every stage (the UI log panel shows it)."""
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in syn.timings.items())
    total = sum(syn.timings.values())
    log.info("%s: %.2f s of audio, %d tokens, %d pass(es) in %.2f s (%s)", what, syn.duration_s,
             syn.generated_tokens, syn.iterations, total, stages, extra={"stage": "request", "seconds": total})
