"""EditXEngine: the one object that owns every loaded part of the model, and the one way to run a job.

Front ends build a typed job (:mod:`runners.jobs`) and call :meth:`EditXEngine.run`, which
takes it through three stages in order and yields audio chunks:

1. preparation (:mod:`runners.pipeline.prepare`): checks, voice, transcript, prompt features,
   prompt ids within the token budget;
2. generation (:mod:`runners.pipeline.generate`): the prompts queued in the engine loop, one
   thread that decodes every running request together (:mod:`runners.scheduler`);
3. synthesis (:mod:`runners.pipeline.synthesize`): the ids turned into a waveform, whole or as
   they arrive, sentences joined by the one cross-fade.

A job is a chain of steps: a clone (its sentences generated together), then edit passes,
each working on the previous step's audio; only the last step may stream. ``clone``, ``edit``
and their ``_stream`` twins are that one path, collected or not. Loading, unloading and
offloading (:mod:`runners.lifecycle`) wait for the jobs in flight.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from runners import privacy
from runners.audio import DECODER_RATE, Audio
from runners.config import EngineConfig
from runners.decoder_worker import DecoderEvents, DecoderStats, DecoderWorker
from runners.text.vocab import VOCABULARY, EditVocabulary
from runners.errors import EngineUnavailableError, RequestAbortedError
from runners.events import EngineEvents
from runners.jobs import (CloneJob, DialogueJob, EditJob, EditPass, Job, Progress, forward_only, no_progress,
                          step_seed)
from runners.lifecycle import EngineLifecycle
from runners.models.store import ModelPaths, resolve_model_root
from runners.pipeline.chunks import STAGES, AudioChunk, Caption, JobStream, Synthesis, add_timings
from runners.pipeline.crossfade import CrossfadeJoiner, join_with_crossfade
from runners.pipeline.generate import Generator
from runners.pipeline.plan import Part, Plan, cut_recording, plan_job
from runners.pipeline.prepare import PreparedAudio, Preparer
from runners.pipeline.synthesize import Synthesizer
from runners.prompt_cache import PromptCache
from runners.scheduler import EngineLoop, GenerationRequest, LLMRunner, Scheduler, SchedulerOutput, SchedulerStats
from runners.models.asr import DetailedTranscription, Transcriber, TranscriberConfig, Transcription
from runners.voices import Voice, VoiceRegistry

log = logging.getLogger("editx.engine")

PREFILL_TOKENS_PER_STEP = 512  # prompt tokens per engine step: a long prompt never stalls decoding for long
FADE_S = 0.02  # sentences of a long text meet with a cross-fade this long
# A CPU decoder batch holds at most this many padded flow frames: in a worker thread on a 2-core CPU, eight
# 1250-frame rows (25 s pieces of a long edit over their own 25 s prompts) decoded 0.73x as fast batched as
# one by one, two of them 0.97x; short rows still batch freely (bench_decoder --long-rows measures it).
CPU_DECODER_BATCH_FRAMES = 3000

__all__ = ["AudioChunk", "EditXEngine", "EngineEvents", "JobStream", "ModelParts", "PreparedAudio", "Synthesis"]


@dataclass
class ModelParts:
    """Every loaded part of the model, typed (the lifecycle moves and drops them together)."""

    audio_tokenizer: object  # runners.models.tokenizers.audio_tokenizer.AudioTokenizer
    text_tokenizer: object  # runners.models.tokenizers.text_tokenizer.TextTokenizer
    prompt_builder: object  # runners.text.prompts.PromptBuilder
    llm: object  # runners.models.step1.llm.Step1LM
    speaker_encoder: object  # runners.models.decoder.prompt_features.SpeakerEncoder
    token2wav: object  # runners.models.decoder.token2wav.Token2Wav


class _WaitClock:
    """Seconds spent waiting for the LLM, counted once however many threads wait at the same time.

    The sentences of a job are awaited in parallel (each by its decode thread), so their waits
    overlap; each wait adds only the time past the latest one already counted.
    """

    def __init__(self) -> None:
        self._mark = 0.0
        self._lock = threading.Lock()

    def seconds(self, began: float, ended: float) -> float:
        with self._lock:
            counted = max(0.0, ended - max(began, self._mark))
            self._mark = max(self._mark, ended)
            return counted


@dataclass
class _Step:
    """One step of one part, queued: its prompt features, its requests (a clone's sentences), seeds and texts."""

    prompt: PreparedAudio
    requests: list[GenerationRequest]
    seeds: list[int | None]
    texts: list[str]  # what each request says (the captions' text)
    speed: float
    transcript: str | None  # what the step's output says (the next edit quotes it)
    clock: _WaitClock  # the job's: its waits for the LLM are counted once
    pending: dict[str, float] = field(default_factory=dict)  # stage seconds not yet reported on a chunk


class EditXEngine(EngineLifecycle):
    """Load once (see :mod:`runners.lifecycle`), then run jobs, transcribe and keep voices."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        super().__init__(config or EngineConfig.from_env())
        cfg = self.config
        self.paths: ModelPaths | None = None
        self._loop: EngineLoop | None = None
        self._tokens_reported = 0
        self.events = EngineEvents()
        self.cache = PromptCache(cfg.cache_dir or None, max_entries=cfg.cache_max_entries,
                                 max_disk_bytes=cfg.cache_max_disk_mb * 1024 * 1024, enabled=cfg.cache_enabled)
        self.transcriber = Transcriber(TranscriberConfig.from_env())  # Whisper loads on its first use
        self.voices = VoiceRegistry(cfg.voices_dir)
        self.prep = Preparer(cfg, self.cache, self.transcriber, self.voices, self._loaded_parts, self.cache_settings)
        self.gen = Generator(cfg, lambda: self._loop, lambda: self.parts.llm.eos_id,  # type: ignore[attr-defined]
                             lambda: self.is_tiny, lambda: self.events.aborted())
        self._decoder: DecoderWorker | None = None
        self.synth = Synthesizer(self._decoder_worker)

    # ------------------------------------------------------------------ jobs
    def run(self, job: Job, *, stream: bool = False, progress: Progress = no_progress,
            cancel: threading.Event | None = None) -> JobStream:
        """Run ``job``; the chunks come as they are made (``stream``) or one per sentence (whole decode).

        Checks, transcription, preparation and queueing happen before this returns, so a bad
        request raises here. Closing the stream aborts the job; setting ``cancel`` too, within
        one engine step. ``progress`` never hears a fraction lower than one it heard before.
        """
        plan = plan_job(self.prep, self.config, job)
        chunks = self._chunks(plan, stream, forward_only(progress), cancel)
        next(chunks)  # runs up to the queueing of the first steps
        return JobStream(chunks, DECODER_RATE, plan.iterations, job.kind)

    def clone(self, prompt_audio: Audio | None, prompt_text: str | None, target_text: str, seed: int | None = None,
              progress: Progress = no_progress, *, speed: float = 1.0, voice: str | None = None,
              edits: tuple[EditPass, ...] = (), cancel: threading.Event | None = None) -> Synthesis:
        """Speak ``target_text`` in the voice of ``prompt_audio`` (or of the registered ``voice``)."""
        job = CloneJob(target_text, prompt_audio, prompt_text, voice, seed, speed, edits)
        return self.run(job, progress=progress, cancel=cancel).collect()

    def clone_stream(self, prompt_audio: Audio | None, prompt_text: str | None, target_text: str,
                     seed: int | None = None, progress: Progress = no_progress, *, speed: float = 1.0,
                     voice: str | None = None, edits: tuple[EditPass, ...] = (),
                     cancel: threading.Event | None = None) -> JobStream:
        """:meth:`clone`, its audio streamed while the ids are still being made."""
        job = CloneJob(target_text, prompt_audio, prompt_text, voice, seed, speed, edits)
        return self.run(job, stream=True, progress=progress, cancel=cancel)

    def edit(self, audio: Audio, audio_text: str | None, edit_type: str, edit_info: str | None = None,
             target_text: str | None = None, n_edit_iter: int = 1, seed: int | None = None,
             progress: Progress = no_progress, *, cancel: threading.Event | None = None) -> Synthesis:
        """Edit ``audio``; each further pass edits the previous output again."""
        job = EditJob(audio, edit_type, edit_info, audio_text, target_text, n_edit_iter, seed)
        return self.run(job, progress=progress, cancel=cancel).collect()

    def edit_stream(self, audio: Audio, audio_text: str | None, edit_type: str, edit_info: str | None = None,
                    target_text: str | None = None, n_edit_iter: int = 1, seed: int | None = None,
                    progress: Progress = no_progress, *, cancel: threading.Event | None = None) -> JobStream:
        """:meth:`edit`; the last pass streams (earlier ones must be whole to be edited again)."""
        job = EditJob(audio, edit_type, edit_info, audio_text, target_text, n_edit_iter, seed)
        return self.run(job, stream=True, progress=progress, cancel=cancel)

    # ------------------------------------------------------- the one pipeline
    def _chunks(self, plan: Plan, stream: bool, progress: Progress,
                cancel: threading.Event | None) -> Iterator[AudioChunk]:
        """The parts' audio in order, joined with the silence each asks for after it.

        The first steps of all parts are queued together (one scheduler job); their whole
        decodes run ahead in threads so the decoder worker batches them, and each part's edit
        passes follow in a thread of its own as soon as its previous step is decoded (so the
        parts' passes are generated together too), while the answer goes out in order. With
        ``stream`` the first part's last step streams as it is made. Codec ids, stage seconds
        and captions ride on the next chunk that carries audio (the last chunk takes what is
        left), so the chunks add up to the whole job.
        """
        started = time.perf_counter()
        stop = cancel if cancel is not None else threading.Event()
        out = _Output(self, stream, started)
        finished = False
        ahead: _DecodesAhead | None = None
        steps: list[_Step | None] = []
        with self._busy():
            try:
                if plan.long_edit:
                    cut_recording(self.prep, plan, progress)
                parts = plan.parts
                clock = _WaitClock()
                steps = [None if part.unchanged else self._prepare(plan, p, 0, progress, clock)
                         for p, part in enumerate(parts)]
                self._submit([s for s in steps if s is not None])
                streamed = [stream and p == 0 and part.steps == 1 for p, part in enumerate(parts)]
                early = [(p, s) for p, s in enumerate(steps) if s is not None and not streamed[p]]
                ahead = _DecodesAhead(self, stop, sum(len(s.requests) for _, s in early))
                for p, step in early:
                    ahead.start(p, step)
                for p, part in enumerate(parts):  # parts with edit passes go through them side by side
                    if part.steps > 1:
                        ahead.chain(p, lambda p=p: self._advance(plan, p, steps, ahead, stream and p == 0,
                                                                 progress, stop))
                yield None  # type: ignore[misc]  # primed: the caller gets the stream from here on
                joiner = CrossfadeJoiner(DECODER_RATE, fade_s=FADE_S)
                # A long recording's silence before its first piece and after its last one, kept; joined like a
                # piece, so the speech fades in and out of it.
                lead = joiner.add(np.zeros(int(round(plan.lead_s * DECODER_RATE)), np.float32))
                if (chunk := out.take(np.concatenate([lead, joiner.end_segment(0.0)]), 0, {})) is not None:
                    yield chunk
                for p, part in enumerate(parts):
                    for j, samples, made, timings, done, text in self._part_audio(plan, p, steps, ahead, stream,
                                                                                  progress, stop):
                        if (chunk := out.take(joiner.add(samples), made, timings)) is not None:
                            yield chunk
                        if done is None:
                            continue
                        spans = len(joiner.spans)
                        rest = joiner.end_segment(part.pause_after_s if done else 0.0)
                        if len(joiner.spans) > spans:
                            out.caption(joiner.spans[-1], text, part)
                        if (chunk := out.take(rest, 0, {})) is not None:
                            yield chunk
                tail = joiner.add(np.zeros(int(round(plan.tail_s * DECODER_RATE)), np.float32))
                if (chunk := out.take(np.concatenate([tail, joiner.finish()]), 0, {})) is not None:
                    yield chunk
                progress("done", 1.0)
                finished = True
            finally:
                if not finished:
                    stop.set()
                if ahead is not None:
                    ahead.close()
                self.gen.abort([r for s in steps if s is not None for r in s.requests])
        yield out.last()
        for stage in STAGES:
            if stage in out.totals:
                self.events.stage(stage, out.totals[stage])
        _log_job(plan, stream, out.samples / DECODER_RATE, out.tokens, out.totals, time.perf_counter() - started)

    def _part_audio(self, plan: Plan, p: int, steps: list["_Step | None"], ahead: "_DecodesAhead", stream: bool,
                    progress: Progress, stop: threading.Event,
                    ) -> Iterator[tuple[int, np.ndarray, int, dict[str, float], bool | None, str]]:
        """(sentence, samples, codec ids, stage seconds, end, text) of part ``p``'s last step.

        ``end`` is None while a sentence goes on, False at the end of a sentence, True at the end
        of the part. Its earlier steps (a clone before its edit passes) ran ahead in :meth:`_advance`.
        """
        part = plan.parts[p]
        if part.unchanged:  # nothing heard to edit: the piece as it was
            assert part.source is not None
            yield 0, part.source.resampled(DECODER_RATE).samples.numpy(), 0, {}, True, part.source_text or ""
            return
        chain = ahead.take_chain(p)
        if chain is not None:  # its earlier steps ran ahead (beside the other parts'); its last step is queued
            made = chain.result()
            yield 0, np.zeros(0, np.float32), made, {}, None, ""
        step = steps[p]
        assert step is not None
        early = ahead.take(p)
        k = part.steps - 1
        last = len(step.requests) - 1
        pending = step.pending
        for j, (request, seed) in enumerate(zip(step.requests, step.seeds)):
            if stream and p == 0:
                counted = _Counted(self.gen.codec_ids(request, stop))
                for samples, timings in self.synth.streamed(counted, step.prompt, seed, step.speed):
                    add_timings(pending, timings)
                    pending["llm"] = pending.get("llm", 0.0) + counted.take_wait()
                    yield j, samples, counted.take_count(), pending, None, step.texts[j]
                    pending = {}
            else:
                samples, made, timings = self._whole_sentence(plan, p, k, step, j, early, progress, stop)
                add_timings(pending, timings)
                yield j, samples, made, pending, None, step.texts[j]
                pending = {}
            yield j, np.zeros(0, np.float32), 0, pending, j == last, step.texts[j]
            pending = {}

    def _advance(self, plan: Plan, p: int, steps: list["_Step | None"], ahead: "_DecodesAhead", streamed: bool,
                 progress: Progress, stop: threading.Event) -> int:
        """Take part ``p`` through every step but its last (an edit follows each: its audio must be whole).

        Runs beside the other parts' chains, so their edit passes are queued and decoded together. The
        last step is queued in ``steps[p]`` with its whole decodes started ahead (unless it streams).
        Returns the codec ids made by the earlier steps.
        """
        part, step = plan.parts[p], steps[p]
        assert step is not None
        early = ahead.take(p)
        made = 0
        for k in range(part.steps - 1):
            pieces, spent = [], dict(step.pending)
            for j in range(len(step.requests)):
                samples, count, timings = self._whole_sentence(plan, p, k, step, j, early, progress, stop)
                pieces.append(samples)
                made += count
                add_timings(spent, timings)
            audio = Audio(torch.from_numpy(join_with_crossfade(pieces, DECODER_RATE, FADE_S)), DECODER_RATE)
            step = self._prepare(plan, p, k + 1, progress, step.clock, audio, step.transcript)
            if stop.is_set():
                raise RequestAbortedError("the request was cancelled")
            self._submit([step])
            steps[p] = step
            if stop.is_set():  # the job ended while this step was being queued: it is nobody's now
                self.gen.abort(step.requests)
                raise RequestAbortedError("the request was cancelled")
            add_timings(step.pending, spent)
            early = None
        if not streamed:
            ahead.start(p, step)
        return made

    def _whole_sentence(self, plan: Plan, p: int, k: int, step: "_Step", j: int, early: "list[Future] | None",
                        progress: Progress, stop: threading.Event) -> tuple[np.ndarray, int, dict[str, float]]:
        """Sentence ``j`` of a step decoded whole: from the decodes run ahead, or here."""
        progress(f"{_tag(plan, p, k)}decoding waveform", _fraction(plan, p, k, 0.3 + 0.7 * (j + 0.5) / len(step.requests)))
        if early is not None:
            return early[j].result()
        return self._decode_whole(step, j, stop)

    def _decode_whole(self, step: "_Step", j: int, stop: threading.Event) -> tuple[np.ndarray, int, dict[str, float]]:
        """Wait for request ``j``'s ids, then decode them at once (the decoder worker batches concurrent ones)."""
        began = time.perf_counter()
        codec_ids = [i for chunk in self.gen.codec_ids(step.requests[j], stop) for i in chunk]
        llm = step.clock.seconds(began, time.perf_counter())
        samples, timings = self.synth.whole(codec_ids, step.prompt, step.seeds[j], step.speed, stop)
        return samples, len(codec_ids), {"llm": llm, **timings}

    def _prepare(self, plan: Plan, p: int, k: int, progress: Progress, clock: _WaitClock,
                 audio: Audio | None = None, transcript: str | None = None) -> "_Step":
        """Step ``k`` of part ``p``, ready to queue: features and prompt ids (a clone's sentences each)."""
        prep, part = self.prep, plan.parts[p]
        tag = _tag(plan, p, k)
        clone = part.clone if k == 0 else None
        if clone is not None:
            progress("loading model", 0.0)
            prompt_audio, prompt_text = prep.voice_prompt(clone.voice, clone.prompt, clone.prompt_text)
            if not (prompt_text or "").strip():
                progress("transcribing prompt audio", 0.0)
            prompt_text = prep.transcript(prompt_text, prompt_audio, "prompt_text")
            progress(f"{tag}tokenizing prompt audio", _fraction(plan, p, k, 0.1))
            t = time.perf_counter()
            prompt = prep.features(prompt_audio)
            sentences = prep.sentences(clone.text)
            prompts = [prep.clone_prompt_ids(prompt, prompt_text, s) for s in sentences]
            prepared = time.perf_counter() - t
            if len(sentences) > 1:
                log.info("clone text of %d characters split into %d sentences, generated together",
                         len(clone.text), len(sentences))
            seeds = [step_seed(part.seed, j) for j in range(len(prompts))]
            speed, said, texts = clone.speed, clone.text, sentences
        else:
            edit = part.edits[k - (1 if part.clone else 0)]
            audio = part.source if audio is None else audio
            assert audio is not None
            said = part.source_text if transcript is None else transcript
            if VOCABULARY.spec(edit.edit_type).needs_transcript:
                if not (said or "").strip():
                    progress("transcribing input audio", _fraction(plan, p, k, 0.0))
                said = prep.transcript(said, audio, "audio_text")
            progress(f"{tag}tokenizing audio", _fraction(plan, p, k, 0.0))
            t = time.perf_counter()
            prompt = prep.features(audio)
            prompts = [prep.edit_prompt_ids(prompt, said, edit)]
            prepared = time.perf_counter() - t
            seeds, speed = [step_seed(part.seed, k)], 1.0
            if edit.edit_type == "paralinguistic":  # the next pass edits what is said now
                said = edit.target_text
            texts = [said or ""]
        progress(f"{tag}generating speech tokens", _fraction(plan, p, k, 0.3))
        requests = [self.gen.request(ids, seed) for ids, seed in zip(prompts, seeds)]
        return _Step(prompt, requests, seeds, texts, speed, said, clock, {"prepare": prepared})

    def _submit(self, steps: list["_Step"]) -> None:
        """Queue the requests of ``steps`` as one scheduler job (one queue place, fed in order)."""
        flat = [r for s in steps for r in s.requests]
        if not flat:
            return
        queued = self.gen.submit(flat)
        i = 0
        for s in steps:
            s.requests, i = queued[i:i + len(s.requests)], i + len(s.requests)

    # ------------------------------------------------------------ other work
    def transcribe(self, audio: Audio, language: str | None = None) -> Transcription:
        """What is said in ``audio`` (Whisper), served from the prompt cache when seen before."""
        detailed = self.transcribe_detailed(audio, language)
        return Transcription(**{name: getattr(detailed, name) for name in Transcription.model_fields})

    def transcribe_detailed(self, audio: Audio, language: str | None = None, *, field_name: str = "audio",
                            **options: object) -> DetailedTranscription:
        """:meth:`transcribe` with timed segments; ``options`` go to the transcriber (and into the cache key)."""
        self.prep.check_audio(audio, field_name)
        with self._busy():
            return self.prep.transcribe(audio, language, **options)

    def create_voice(self, name: str, audio: Audio, text: str | None) -> Voice:
        """Register ``audio`` as voice ``name`` with its transcript (given or heard) and its prompt features."""
        self.voices.check_new(name)
        self.prep.check_audio(audio, "audio")
        with self._busy():
            transcript = self.prep.transcript(text, audio, "text")
            prepared = self.prep.features(audio)
            return self.voices.create(name, audio, transcript, prepared.codec_ids, prepared.mel, prepared.speaker,
                                      self.cache_settings())

    def prepare(self, audio: Audio) -> PreparedAudio:
        """Tokens, mel and speaker embedding of one waveform (cached by its samples)."""
        with self._busy():
            return self.prep.features(audio)

    def tokenize(self, audio: Audio) -> list[int]:
        """Codec ids (0..5119, interleaved 2:3) of an audio, as the LLM sees it."""
        self.prep.check_audio(audio)
        with self._busy():
            return self.prep.codec_ids(audio)

    def check_audio(self, audio: Audio, name: str = "audio") -> Audio:
        return self.prep.check_audio(audio, name)

    def decode(self, codec_ids: list[int], prompt: PreparedAudio, seed: int | None = None,
               speed: float = 1.0) -> tuple[np.ndarray, dict[str, float]]:
        """24 kHz float32 waveform of generated codec ids in the prompt's voice, and seconds per stage."""
        with self._busy():
            return self.synth.whole(codec_ids, prompt, seed, speed)

    def clear_prompt_cache(self) -> int:
        """Empty the prompt cache (memory and disk) and its statistics; returns how many entries went."""
        dropped = self.cache.clear()
        log.info("prompt cache cleared on request (%d entries)", dropped)
        return dropped

    def cache_settings(self) -> str:
        """What besides the samples changes the prompt features: the model files used.

        Not the LLM variant (EDITX_LLM_QUANTIZATION): the features come from the audio
        tokenizer, the mel and the speaker model, which are the same for every variant.
        """
        paths = self.paths or self.resolve_paths()
        return f"v1|{paths.root}|{self.config.funasr_id}"

    # ---------------------------------------------------------------- loading
    @property
    def parts(self) -> ModelParts:
        """The loaded parts (loading them first when needed)."""
        return self._loaded_parts()

    @property
    def vocabulary(self) -> EditVocabulary:
        return VOCABULARY

    @property
    def is_tiny(self) -> bool:
        """True for a random-weight root written by runners.models.tiny (its output is noise)."""
        from runners.models.tiny import TINY_MARKER

        if self.config.is_tiny:
            return True
        return self.paths is not None and (self.paths.root / TINY_MARKER).is_file()

    @property
    def model_root(self) -> Path | None:
        return self.paths.root if self.paths else None

    def resolve_paths(self) -> ModelPaths:
        cfg = self.config
        awq = cfg.llm_quantization == "awq"
        if cfg.is_tiny:
            from runners.models.tiny import TINY_MARKER, build_tiny_model_root

            root = cfg.tiny_root()
            if not (root / TINY_MARKER).is_file():
                log.warning("EDITX_MODEL_PATH=tiny: writing a random-weight model to %s (output is noise)", root)
                build_tiny_model_root(root)
            if awq and ModelPaths(root, awq=True).awq_dir is None:
                from runners.models.tiny import write_tiny_awq_part

                log.warning("EDITX_LLM_QUANTIZATION=awq: writing the tiny AWQ-4bit checkpoint to %s", root)
                write_tiny_awq_part(root)
            return ModelPaths(root, cfg.funasr_id, awq).check()
        return resolve_model_root(cfg.model_path, cfg.model_source, funasr_id=cfg.funasr_id, awq=awq)

    def _load_parts(self) -> None:
        from runners.models.tokenizers.audio_tokenizer import AudioTokenizer
        from runners.models.step1.llm import Step1LM
        from runners.models.decoder.prompt_features import SpeakerEncoder
        from runners.text.prompts import PromptBuilder
        from runners.models.tokenizers.text_tokenizer import TextTokenizer
        from runners.models.decoder.token2wav import Token2Wav

        paths = self.paths = self.resolve_paths()
        cfg = self.config
        text_tokenizer = TextTokenizer(paths.text_tokenizer_dir)
        self._parts = ModelParts(
            audio_tokenizer=AudioTokenizer(paths, device=self.device),
            text_tokenizer=text_tokenizer,
            prompt_builder=PromptBuilder(text_tokenizer),
            llm=Step1LM.from_pretrained(paths.llm_weights_dir, device=self.device, dtype=cfg.llm_torch_dtype(),
                                        quantization=cfg.llm_quantization),
            speaker_encoder=SpeakerEncoder(paths.decoder_dir / "campplus.onnx", device=self.device),
            token2wav=Token2Wav(paths.decoder_dir, device=self.device, dtype=cfg.decoder_torch_dtype()),
        )

    def _start_serving(self) -> None:
        """The engine loop over the loaded LLM: one slot per running request, the cache allocated once."""
        from runners.models.step1.cuda_graphs import decode_function
        from runners.models.step1.quantization import cuda_graphs_mode

        llm = self._parts.llm
        cfg = self.config
        restrict = getattr(llm.model, "restrict_logits", None)
        if restrict is not None:  # before any CUDA graph is captured
            restrict(self.gen.allowed_ids(llm.eos_id))
        decode = decode_function(llm, cuda_graphs_mode(cfg.llm_quantization, cfg.cuda_graphs), cfg.max_batch)
        runner = LLMRunner(llm, cfg.max_batch, cfg.max_total_tokens, decode=decode,
                           prefix_tokens=cfg.prefix_cache_tokens)
        scheduler = Scheduler(cfg.max_batch, cfg.max_queue, PREFILL_TOKENS_PER_STEP, eos_id=llm.eos_id,
                              prefix_cached=runner.prefix_lookup)
        sync_every = 4 if self.device.type == "cuda" else 1
        self._tokens_reported = 0
        self._loop = EngineLoop(runner, scheduler, sync_every=sync_every, on_step=self._on_step).start()
        frames = cfg.decoder_batch_frames
        if frames is None:
            frames = CPU_DECODER_BATCH_FRAMES if self.device.type == "cpu" else 0
        self._decoder = DecoderWorker(self._parts.token2wav, max_batch=cfg.decoder_batch,
                                      events=_DecoderEvents(self), max_frames=frames).start()

    def _stop_serving(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        if self._decoder is not None:
            self._decoder.stop()
            self._decoder = None

    def _decoder_worker(self) -> DecoderWorker:
        """The running decoder worker (the model is loaded while a job holds the engine)."""
        worker = self._decoder
        if worker is None:
            raise EngineUnavailableError("the model is not loaded; retry shortly")
        return worker

    def _release_parts(self) -> None:
        self.transcriber.unload()

    def _offload_refusal(self) -> str | None:
        from runners.models.step1.quantization import offload_supported

        if offload_supported(self.config.llm_quantization):
            return None
        return (f"offload of a {self.config.llm_quantization} LLM unloads instead: bitsandbytes weights are not "
                "moved between devices")

    def _on_step(self, plan: SchedulerOutput, seconds: float) -> None:
        loop = self._loop
        if loop is None:
            return
        scheduler = loop.scheduler  # every step: plain counters, not the stats model
        made = scheduler.generated_tokens
        new_tokens, self._tokens_reported = made - self._tokens_reported, made
        self.events.step(len(plan.decodes), scheduler.get_request_counts()[1], new_tokens)

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
            "decoder": self.decoder_stats().model_dump(),
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

    def decoder_stats(self) -> DecoderStats:
        """Decoder batches: size, queue depth, seconds per batch (empty figures when not loaded)."""
        worker = self._decoder
        if worker is None:
            return DecoderStats.idle(self.config.decoder_batch)
        return worker.stats()

    def _llm_status(self) -> dict[str, object]:
        """The LLM variant, its weight memory once loaded, and what idle does with it."""
        from runners.models.step1.quantization import llm_status

        llm = getattr(self._parts, "llm", None)
        return llm_status(self.config.llm_quantization, getattr(llm, "model", None), self.config.idle_action)


class _Output:
    """The chunks a job sends: numbered, carrying the ids, seconds and captions since the previous one."""

    def __init__(self, engine: EditXEngine, stream: bool, started: float) -> None:
        self._engine = engine
        self._stream = stream
        self._started = started
        self.index = 0
        self.samples = 0  # output samples so far
        self.tokens = 0  # codec ids made so far
        self.totals: dict[str, float] = {}  # stage seconds of the chunks sent
        self._tokens = 0
        self._timings: dict[str, float] = {}
        self._captions: list[Caption] = []
        self._count = 0

    def take(self, samples: np.ndarray, made: int, timings: dict[str, float]) -> AudioChunk | None:
        """The next chunk when ``samples`` holds audio; otherwise the ids and seconds wait for one that does."""
        add_timings(self._timings, timings)
        self._tokens += made
        self.tokens += made
        self.samples += samples.size
        if samples.size == 0:
            return None
        if self.index == 0 and self._stream:
            self._engine.events.first_chunk(time.perf_counter() - self._started)
        return self._chunk(samples, last=False)

    def caption(self, span: tuple[int, int], text: str, part: Part) -> None:
        """A sentence (or piece) whose place in the output is now known."""
        start, end = span[0] / DECODER_RATE, span[1] / DECODER_RATE
        self._captions.append(Caption(self._count, round(start, 3), round(end, 3), text, part.turn, part.voice))
        self._count += 1

    def last(self) -> AudioChunk:
        return self._chunk(np.zeros(0, np.float32), last=True)

    def _chunk(self, samples: np.ndarray, last: bool) -> AudioChunk:
        add_timings(self.totals, self._timings)
        chunk = AudioChunk(samples, DECODER_RATE, self.index, last=last, tokens=self._tokens, timings=self._timings,
                           captions=tuple(self._captions))
        self.index += 0 if last else 1
        self._tokens, self._timings, self._captions = 0, {}, []
        return chunk


class _DecodesAhead:
    """Whole decodes of queued steps, run in threads as their ids complete.

    The decoder worker batches what runs at once, so a dialogue's turns (and a long text's
    sentences, a long recording's pieces) decode together while the answer is still being
    sent in order. ``stop`` drops what is queued; the threads end with their requests.
    """

    def __init__(self, engine: EditXEngine, stop: threading.Event, requests: int) -> None:
        self._engine = engine
        self._stop = stop
        self._threads = max(1, min(requests, engine.config.decoder_batch))
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[int, list[Future]] = {}
        # Chains (a part's steps before its last) wait on decodes, decodes never wait on chains: two pools,
        # so a full pool of waiting chains cannot starve the decodes they wait for.
        self._chain_pool: ThreadPoolExecutor | None = None
        self._chains: dict[int, Future] = {}

    def start(self, part: int, step: _Step) -> None:
        """Decode the step's sentences whole as their ids complete; :meth:`take` gets the futures."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="editx-decode")
            self._futures[part] = [self._pool.submit(self._engine._decode_whole, step, j, self._stop)
                                   for j in range(len(step.requests))]

    def take(self, part: int) -> list[Future] | None:
        """The futures of the step last started for a part (None when none was run ahead)."""
        with self._lock:
            return self._futures.pop(part, None)

    def chain(self, part: int, run: Callable[[], int]) -> None:
        """Run a part's earlier steps now, beside the other parts'; :meth:`take_chain` gets the future."""
        with self._lock:
            if self._chain_pool is None:
                self._chain_pool = ThreadPoolExecutor(self._threads, thread_name_prefix="editx-chain")
            # in a copy of the caller's context: progress callbacks that live in context variables (Gradio's) work there
            self._chains[part] = self._chain_pool.submit(contextvars.copy_context().run, run)

    def take_chain(self, part: int) -> Future | None:
        with self._lock:
            return self._chains.pop(part, None)

    def close(self) -> None:
        for pool in (self._chain_pool, self._pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


def _tag(plan: Plan, p: int, k: int) -> str:
    """How progress names step ``k`` of part ``p``: ``turn 2/8: pass 1/2: `` (nothing for one step)."""
    part, n = plan.parts[p], len(plan.parts)
    tag = f"{plan.noun} {p + 1}/{n}: " if n > 1 else ""
    return tag + (f"pass {k + 1}/{part.steps}: " if part.steps > 1 else "")


def _fraction(plan: Plan, p: int, k: int, within: float) -> float:
    """Share of the job done at ``within`` (0..1) of step ``k`` of part ``p``."""
    return (p + (k + within) / max(plan.parts[p].steps, 1)) / max(len(plan.parts), 1)


class _DecoderEvents(DecoderEvents):
    """The decoder worker's batches, passed on to the engine's events (the engine's may be replaced)."""

    def __init__(self, engine: EditXEngine) -> None:
        self._engine = engine

    def decoder_batch(self, size: int, seconds: float, queue_depth: int) -> None:
        self._engine.events.decoder_batch(size, seconds, queue_depth)


class _Counted(Iterator[list[int]]):
    """An id stream that counts the ids it passes on and the time spent waiting for them (the LLM's share)."""

    def __init__(self, ids: Iterator[list[int]]) -> None:
        self._ids = ids
        self._count = 0
        self._wait = 0.0

    def __next__(self) -> list[int]:
        t = time.perf_counter()
        try:
            chunk = next(self._ids)
        finally:
            self._wait += time.perf_counter() - t
        self._count += len(chunk)
        return chunk

    def take_count(self) -> int:
        count, self._count = self._count, 0
        return count

    def take_wait(self) -> float:
        wait, self._wait = self._wait, 0.0
        return wait


def _log_job(plan: Plan, stream: bool, audio_s: float, tokens: int, timings: dict[str, float],
             wall_s: float) -> None:
    """One line per finished job, with the time of every stage (the UI log panel shows it)."""
    job = plan.job
    if isinstance(job, DialogueJob):
        what = f"dialogue of {len(job.turns)} turns"
    else:
        edits = list(job.edits) if isinstance(job, CloneJob) else [job.edit] * job.passes
        what = "clone" if isinstance(job, CloneJob) else "edit"
        if edits and privacy.enabled():
            what += " " + ", ".join(e.label() for e in edits)
        elif edits:
            what += f" + {len(edits)} edit pass(es)" if isinstance(job, CloneJob) else f" {edits[0].edit_type}"
        if plan.long_edit:
            what += f" in {len(plan.parts)} pieces"
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
    log.info("%s%s: %.2f s of audio, %d tokens, %d step(s) in %.2f s (%s)", what, " (streamed)" if stream else "",
             audio_s, tokens, plan.steps, wall_s, stages, extra={"stage": "request", "seconds": round(wall_s, 3)})
