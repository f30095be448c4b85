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

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from runners import privacy
from runners.audio import DECODER_RATE, Audio
from runners.config import EngineConfig
from runners.decoder_worker import DecoderEvents, DecoderStats, DecoderWorker
from runners.text.vocab import VOCABULARY, EditVocabulary
from runners.errors import EngineUnavailableError
from runners.events import EngineEvents
from runners.jobs import CloneJob, EditJob, EditPass, Job, Progress, no_progress, step_seed
from runners.lifecycle import EngineLifecycle
from runners.models.store import ModelPaths, resolve_model_root
from runners.pipeline.chunks import STAGES, AudioChunk, JobStream, Synthesis, add_timings
from runners.pipeline.crossfade import CrossfadeJoiner
from runners.pipeline.generate import Generator
from runners.pipeline.prepare import PreparedAudio, Preparer
from runners.pipeline.synthesize import Synthesizer
from runners.prompt_cache import PromptCache
from runners.scheduler import EngineLoop, GenerationRequest, LLMRunner, Scheduler, SchedulerOutput, SchedulerStats
from runners.models.decoder.token2wav import check_speed
from runners.models.asr import DetailedTranscription, Transcriber, TranscriberConfig, Transcription
from runners.voices import Voice, VoiceRegistry

log = logging.getLogger("editx.engine")

PREFILL_TOKENS_PER_STEP = 512  # prompt tokens per engine step: a long prompt never stalls decoding for long
FADE_S = 0.02  # sentences of a long text meet with a cross-fade this long

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


@dataclass
class _Plan:
    """A job after its checks: an optional clone, then edit passes on ``source`` or on the clone."""

    job: Job
    clone: CloneJob | None
    source: Audio | None
    source_text: str | None
    edits: list[EditPass]
    seed: int | None

    @property
    def steps(self) -> int:
        return (1 if self.clone else 0) + len(self.edits)


@dataclass
class _Step:
    """One step of a job, queued: its prompt features, its requests (a clone's sentences) and seeds."""

    prompt: PreparedAudio
    requests: list[GenerationRequest]
    seeds: list[int | None]
    speed: float
    transcript: str | None  # what the step's output says (the next edit quotes it)
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
        one engine step.
        """
        plan = self._plan(job)
        chunks = self._chunks(plan, stream, progress, cancel)
        next(chunks)  # runs up to the queueing of the first step
        return JobStream(chunks, DECODER_RATE, plan.steps, job.kind)

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
    def _plan(self, job: Job) -> _Plan:
        """Everything that can be checked without the model, checked once (errors name the field)."""
        prep = self.prep
        if isinstance(job, CloneJob):
            prep.check_voice_choice(job.voice, job.prompt)
            if job.prompt is not None:
                prep.check_audio(job.prompt, "prompt_audio")
                if not (job.prompt_text or "").strip():
                    prep.check_transcribable("prompt_text")
            text = prep.check_clone_text(job.text)
            check_speed(job.speed)
            edits = [prep.check_edit(e) for e in job.edits]
            if edits:
                prep.check_passes(len(edits), "instructions")
            clone = CloneJob(text, job.prompt, job.prompt_text, job.voice, job.seed, float(job.speed), tuple(edits))
            return _Plan(job, clone, None, None, edits, job.seed)
        prep.check_audio(job.audio, "audio")
        edit = prep.check_edit(job.edit)
        prep.check_passes(job.passes)
        text = prep.check_text(job.audio_text, "audio_text", required=False)
        if not text and VOCABULARY.spec(edit.edit_type).needs_transcript:
            prep.check_transcribable("audio_text")
        return _Plan(job, None, job.audio, text or None, [edit] * job.passes, job.seed)

    def _chunks(self, plan: _Plan, stream: bool, progress: Progress,
                cancel: threading.Event | None) -> Iterator[AudioChunk]:
        """The job's steps in order; only the last one's audio leaves (the others are edited again).

        Codec ids and stage seconds ride on the next chunk that carries audio (the last chunk
        takes what is left), so the chunks add up to the whole job.
        """
        started = time.perf_counter()
        totals: dict[str, float] = {}
        carry_timings: dict[str, float] = {}
        carry_tokens = index = tokens = samples_out = 0
        with self._busy():
            step = self._start(plan, 0, progress)
            yield None  # type: ignore[misc]  # primed: the caller gets the stream from here on
            try:
                for k in range(plan.steps - 1):  # an edit follows: this step's audio must be whole
                    samples, made = self._collect(step, plan, k, progress, cancel, carry_timings)
                    carry_tokens += made
                    tokens += made
                    step = self._start(plan, k + 1, progress, Audio(torch.from_numpy(samples), DECODER_RATE),
                                       step.transcript)
                for samples, made, timings in self._pieces(step, plan, plan.steps - 1, stream, progress, cancel):
                    add_timings(carry_timings, timings)
                    carry_tokens += made
                    tokens += made
                    samples_out += samples.size
                    if samples.size == 0:
                        continue
                    if index == 0 and stream:
                        self.events.first_chunk(time.perf_counter() - started)
                    add_timings(totals, carry_timings)
                    yield AudioChunk(samples, DECODER_RATE, index, tokens=carry_tokens, timings=carry_timings)
                    index, carry_tokens, carry_timings = index + 1, 0, {}
                progress("done", 1.0)
            finally:
                self.gen.abort(step.requests)
        add_timings(totals, carry_timings)
        yield AudioChunk(np.zeros(0, np.float32), DECODER_RATE, index, last=True, tokens=carry_tokens,
                         timings=carry_timings)
        for stage in STAGES:
            if stage in totals:
                self.events.stage(stage, totals[stage])
        _log_job(plan, stream, samples_out / DECODER_RATE, tokens, totals, time.perf_counter() - started)

    def _start(self, plan: _Plan, k: int, progress: Progress, audio: Audio | None = None,
               transcript: str | None = None) -> _Step:
        """Prepare step ``k`` and queue its prompts (a clone's sentences go in together)."""
        prep, n = self.prep, plan.steps
        tag = f"pass {k + 1}/{n}: " if n > 1 else ""
        clone = plan.clone if k == 0 else None
        if clone is not None:
            progress("loading model", 0.0)
            prompt_audio, prompt_text = prep.voice_prompt(clone.voice, clone.prompt, clone.prompt_text)
            if not (prompt_text or "").strip():
                progress("transcribing prompt audio", 0.0)
            prompt_text = prep.transcript(prompt_text, prompt_audio, "prompt_text")
            progress(f"{tag}tokenizing prompt audio", 0.1 / n)
            t = time.perf_counter()
            prompt = prep.features(prompt_audio)
            sentences = prep.sentences(clone.text)
            prompts = [prep.clone_prompt_ids(prompt, prompt_text, s) for s in sentences]
            prepared = time.perf_counter() - t
            if len(sentences) > 1:
                log.info("clone text of %d characters split into %d sentences, generated together",
                         len(clone.text), len(sentences))
            seeds = [step_seed(plan.seed, j) for j in range(len(prompts))]
            speed, said = clone.speed, clone.text
        else:
            edit = plan.edits[k - (1 if plan.clone else 0)]
            audio = plan.source if audio is None else audio
            assert audio is not None
            said = plan.source_text if transcript is None else transcript
            if VOCABULARY.spec(edit.edit_type).needs_transcript:
                if not (said or "").strip():
                    progress("transcribing input audio", k / n)
                said = prep.transcript(said, audio, "audio_text")
            progress(f"{tag}tokenizing audio", k / n)
            t = time.perf_counter()
            prompt = prep.features(audio)
            prompts = [prep.edit_prompt_ids(prompt, said, edit)]
            prepared = time.perf_counter() - t
            seeds, speed = [step_seed(plan.seed, k)], 1.0
            if edit.edit_type == "paralinguistic":  # the next pass edits what is said now
                said = edit.target_text
        progress(f"{tag}generating speech tokens", (k + 0.3) / n)
        requests = self.gen.submit([self.gen.request(ids, seed) for ids, seed in zip(prompts, seeds)])
        return _Step(prompt, requests, seeds, speed, said, {"prepare": prepared})

    def _pieces(self, step: _Step, plan: _Plan, k: int, stream: bool, progress: Progress,
                cancel: threading.Event | None) -> Iterator[tuple[np.ndarray, int, dict[str, float]]]:
        """(samples, codec ids, stage seconds) of one step, its sentences joined by the one cross-fade."""
        joiner = CrossfadeJoiner(DECODER_RATE, fade_s=FADE_S)
        n = plan.steps
        pending, made = step.pending, 0
        for j, (request, seed) in enumerate(zip(step.requests, step.seeds)):
            ids = self.gen.codec_ids(request, cancel)
            if stream:
                counted = _Counted(ids)
                for samples, timings in self.synth.streamed(counted, step.prompt, seed, step.speed):
                    add_timings(pending, timings)
                    pending["llm"] = pending.get("llm", 0.0) + counted.take_wait()
                    out = joiner.add(samples)
                    yield out, counted.take_count(), pending
                    pending = {}
            else:
                t = time.perf_counter()
                codec_ids = [i for chunk in ids for i in chunk]
                add_timings(pending, {"llm": time.perf_counter() - t})
                progress(f"{'pass %d/%d: ' % (k + 1, n) if n > 1 else ''}decoding waveform",
                         (k + 0.3 + 0.7 * (j + 0.5) / len(step.requests)) / n)
                samples, timings = self.synth.whole(codec_ids, step.prompt, seed, step.speed, cancel)
                add_timings(pending, timings)
                made += len(codec_ids)
                yield joiner.add(samples), made, pending
                pending, made = {}, 0
            yield joiner.end_segment(), 0, {}
        yield joiner.finish(), 0, pending

    def _collect(self, step: _Step, plan: _Plan, k: int, progress: Progress, cancel: threading.Event | None,
                 timings: dict[str, float]) -> tuple[np.ndarray, int]:
        """A step's whole audio (another step edits it) and its codec id count; its seconds go to ``timings``."""
        pieces, made = [], 0
        for samples, count, spent in self._pieces(step, plan, k, False, progress, cancel):
            pieces.append(samples)
            made += count
            add_timings(timings, spent)
        self.gen.abort(step.requests)
        return np.concatenate(pieces).astype(np.float32), made

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
        decode = decode_function(llm, cuda_graphs_mode(cfg.llm_quantization, cfg.cuda_graphs), cfg.max_batch)
        runner = LLMRunner(llm, cfg.max_batch, cfg.max_total_tokens, decode=decode,
                           prefix_tokens=cfg.prefix_cache_tokens)
        scheduler = Scheduler(cfg.max_batch, cfg.max_queue, PREFILL_TOKENS_PER_STEP, eos_id=llm.eos_id,
                              prefix_cached=runner.prefix_lookup)
        sync_every = 4 if self.device.type == "cuda" else 1
        self._tokens_reported = 0
        self._loop = EngineLoop(runner, scheduler, sync_every=sync_every, on_step=self._on_step).start()
        self._decoder = DecoderWorker(self._parts.token2wav, max_batch=cfg.decoder_batch,
                                      events=_DecoderEvents(self)).start()

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


def _log_job(plan: _Plan, stream: bool, audio_s: float, tokens: int, timings: dict[str, float],
             wall_s: float) -> None:
    """One line per finished job, with the time of every stage (the UI log panel shows it)."""
    what = "clone" if plan.clone else "edit"
    if plan.edits and privacy.enabled():
        what += " " + ", ".join(e.label() for e in plan.edits)
    elif plan.edits:
        what += f" + {len(plan.edits)} edit pass(es)" if plan.clone else f" {plan.edits[0].edit_type}"
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
    log.info("%s%s: %.2f s of audio, %d tokens, %d step(s) in %.2f s (%s)", what, " (streamed)" if stream else "",
             audio_s, tokens, plan.steps, wall_s, stages, extra={"stage": "request", "seconds": round(wall_s, 3)})
