"""Preparation: everything a job needs before the LLM runs, checked once.

In order: the request's inputs are checked against the limits in force (audio, text, speed,
edit values), a voice id is resolved to its audio and transcript, empty transcripts are
transcribed (Whisper, cached), the prompt audio's features are taken (codec ids, mel, speaker
embedding; cached by the samples they come from), and the LLM prompt ids are built and held
against the token budget. Nothing here touches the scheduler or the decoder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from runners import privacy
from runners.audio import DECODER_RATE, TOKENIZER_RATE, Audio, limit_peak
from runners.config import EngineConfig
from runners.text.vocab import VOCABULARY, validate_edit
from runners.errors import InputTooLargeError, InvalidInputError
from runners.jobs import MAX_EDIT_PASSES, EditPass
from runners.text.markup import check_markup
from runners.prompt_cache import PromptCache, PromptFeatures, audio_key
from runners.text.prompts import edit_instruction
from runners.models.tokenizers.tokens import TOKENS_PER_SECOND
from runners.models.asr import DetailedTranscription, Transcriber

if TYPE_CHECKING:
    from runners.engine import ModelParts
    from runners.voices import StoredVoice, VoiceRegistry

log = logging.getLogger("editx.engine")

SENTENCE_MAX_CHARS = 300  # a clone text longer than this is generated sentence by sentence, as one batch


@dataclass
class PreparedAudio:
    """Everything derived from one input waveform that generation needs."""

    audio: Audio  # mono, peak-limited to 0.6, original sample rate
    codec_ids: list[int]  # interleaved vq02/vq06 codec ids of the trimmed 16 kHz audio
    mel: torch.Tensor  # (1, T, 80) 24 kHz mel of the untrimmed audio
    speaker: torch.Tensor  # (1, 192) CAM++ embedding


class Preparer:
    """Checks, voices, transcripts, prompt features and prompt ids (see the module docstring).

    ``parts`` returns the loaded model parts (loading them if needed); the tokenizer and the
    speaker model run one prompt at a time, beside (never inside) the LLM loop.
    """

    def __init__(self, config: EngineConfig, cache: PromptCache, transcriber: Transcriber,
                 voices: "VoiceRegistry", parts: Callable[[], "ModelParts"], settings: Callable[[], str]) -> None:
        self.config = config
        self.cache = cache
        self.transcriber = transcriber
        self.voices = voices
        self._parts = parts
        self._settings = settings  # what besides the samples changes the features (the model files)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ checks
    def check_audio(self, audio: Audio, name: str = "audio", max_s: float | None = None,
                    setting: str = "EDITX_MAX_AUDIO_S") -> Audio:
        """Reject audio the model cannot use, with a message naming the problem."""
        if audio.samples.numel() == 0 or audio.duration_s < 0.1:
            raise InvalidInputError(f"{name} is empty or shorter than 0.1 s", field=name)
        if not bool(torch.isfinite(audio.samples).all()):
            raise InvalidInputError(f"{name} contains NaN or infinite samples", field=name)
        if float(audio.samples.abs().max()) < 1e-4:
            raise InvalidInputError(f"{name} is silent: no sample rises above -80 dBFS", field=name)
        limit = self.config.max_audio_s if max_s is None else max_s
        if audio.duration_s > limit:
            raise InputTooLargeError(
                f"{name} is {audio.duration_s:.1f} s long; the limit is {limit:g} s "
                f"(set {setting} to change it)",
                field=name,
            )
        return audio

    def check_clone_text(self, text: str | None, name: str = "target_text") -> str:
        """A text to speak: within the limits, its leading tag a known language or sound tag."""
        return check_markup(self.check_text(text, name), allow_paralinguistic=True, field=name)

    def check_text(self, text: str | None, name: str, required: bool = True) -> str:
        value = (text or "").strip()
        if required and not value:
            raise InvalidInputError(f"{name} is empty", field=name)
        if len(value) > self.config.max_text_chars:
            raise InputTooLargeError(
                f"{name} has {len(value)} characters; the limit is {self.config.max_text_chars}", field=name
            )
        return value

    def check_edit(self, edit: EditPass) -> EditPass:
        """The pass with its value normalized, or an error naming the allowed values."""
        info = validate_edit(edit.edit_type, edit.edit_info, edit.target_text)
        spec = VOCABULARY.spec(edit.edit_type)
        target = self.check_text(edit.target_text, "target_text", required=spec.needs_target_text)
        return EditPass(edit.edit_type, info, target or None)

    @staticmethod
    def check_passes(passes: int, name: str = "n_edit_iter") -> int:
        if not 1 <= passes <= MAX_EDIT_PASSES:
            raise InvalidInputError(f"{name} must be between 1 and {MAX_EDIT_PASSES} (got {passes})", field=name)
        return passes

    # ------------------------------------------------------------------ voices
    @staticmethod
    def check_voice_choice(voice: str | None, prompt: Audio | None) -> None:
        """A clone names its voice one way: an uploaded prompt or a registered voice id."""
        if voice and prompt is not None:
            raise InvalidInputError("give prompt_audio or voice, not both", field="voice")
        if not voice and prompt is None:
            raise InvalidInputError("prompt_audio is required (or give voice: a registered voice id)",
                                    field="prompt_audio")

    def voice_prompt(self, voice: str | None, prompt: Audio | None, prompt_text: str | None,
                     ) -> tuple[Audio, str | None]:
        """The prompt of a clone: the uploaded audio, or a registered voice (its stored features used)."""
        self.check_voice_choice(voice, prompt)
        if voice:
            stored = self.voices.load(voice)
            self.use_stored_features(stored)
            return stored.audio, (prompt_text or "").strip() or stored.voice.text
        assert prompt is not None
        return prompt, prompt_text

    def use_stored_features(self, stored: "StoredVoice") -> bool:
        """Seed the prompt cache with a voice's stored features, under the key :meth:`features` looks up.

        False (and nothing changes) when they belong to other model settings or the cache is off;
        preparation then computes them as for any prompt.
        """
        settings = self._settings()
        if stored.features is None or stored.settings != settings or not self.cache.enabled:
            return False
        key = self._features_key(Audio(limit_peak(stored.audio.samples), stored.audio.sample_rate))
        present = self.cache.peek(key)
        if present is None or not present.has_features:
            self.cache.put(key, stored.features)
        return True

    # ------------------------------------------------------------- transcripts
    def transcribe(self, audio: Audio, language: str | None = None, **options: Any) -> DetailedTranscription:
        """What is said in ``audio`` (Whisper), served from the prompt cache when asked before.

        ``options`` are the transcriber's (initial_prompt, temperature, word_timestamps, …); they
        are part of the cache key, so a different question is never answered from the cache.
        """
        cfg = self.transcriber.config
        # unset options drop out of the key; a temperature of 0.0 is a question of its own (0.0 == False)
        asked = "|".join(f"{k}={v!r}" for k, v in sorted(options.items()) if not (v is None or v is False or v == ""))
        settings = f"asr2|{cfg.model}|{cfg.beam_size}|{language or 'auto'}|{asked}"
        key = audio_key(audio.samples, audio.sample_rate, settings)
        hit = self.cache.get(key, need_features=False, need_transcript=True)
        if hit is not None:
            log.info("transcript cache hit (%.2f s of audio)", audio.duration_s)
            return DetailedTranscription.model_validate_json(hit.transcript or "{}")
        result = self.transcriber.transcribe_detailed(audio, language, **options)
        self.cache.put(key, PromptFeatures(transcript=result.model_dump_json(), compute_s=result.elapsed_s))
        return result

    def hear(self, audio: Audio, *, word_timestamps: bool = False) -> DetailedTranscription:
        """The engine's own transcript of ``audio`` (an empty prompt_text or audio_text, a long recording's pauses).

        Decoded greedily (temperature 0): Whisper's fallback to sampling at 0.2 … 1.0 is random, so the
        same audio could be heard differently on each run (and at 1.0 whole stretches of speech were
        heard as nothing), and a seeded job would not be the same job again.
        """
        return self.transcribe(audio, word_timestamps=word_timestamps, temperature=0.0)

    def check_transcribable(self, field: str) -> None:
        """An empty transcript is allowed only when it will be transcribed (checked before any loading)."""
        if not self.config.auto_transcribe:
            raise InvalidInputError(
                f"{field} is empty: give the transcript of the audio (auto-transcription is off; "
                "set EDITX_AUTO_TRANSCRIBE=1 to have it transcribed)",
                field=field,
            )

    def transcript(self, text: str | None, audio: Audio, field: str) -> str:
        """The given transcript, or (when empty and auto-transcription is on) Whisper's."""
        given = self.check_text(text, field, required=False)
        if given:
            return given
        self.check_transcribable(field)
        heard = self.hear(audio).text
        if not heard:
            raise InvalidInputError(f"{field} is empty and no speech was recognized in the audio: give the transcript",
                                    field=field)
        log.info("auto-transcribed %s (%s)", field, privacy.shown(heard))
        return self.check_text(heard, field)

    # ---------------------------------------------------------------- features
    def _features_key(self, limited: Audio) -> str:
        return audio_key(limited.samples, limited.sample_rate, self._settings())

    def features(self, audio: Audio) -> PreparedAudio:
        """Codec ids, mel and speaker embedding of one waveform (the 'prompt features').

        A cache hit runs neither the tokenizer nor the mel nor the speaker model.
        """
        from runners.models.decoder.prompt_features import prompt_mel

        limited = Audio(limit_peak(audio.samples), audio.sample_rate)
        key = self._features_key(limited)
        hit = self.cache.get(key)
        if hit is not None:
            log.info("prompt cache hit (%.2f s of audio)", limited.duration_s)
            return PreparedAudio(limited, list(hit.codec_ids or []), hit.mel, hit.speaker)  # type: ignore[arg-type]
        parts = self._parts()
        with self._lock:
            start = time.perf_counter()
            tokens = parts.audio_tokenizer.tokenize(limited)
            mel = prompt_mel(limited.resampled(DECODER_RATE).samples)
            speaker = parts.speaker_encoder(limited.resampled(TOKENIZER_RATE).samples)
            elapsed = time.perf_counter() - start
        self.cache.put(key, PromptFeatures(tokens.codec_ids, mel, speaker, compute_s=elapsed))
        log.info("prompt features computed in %.2f s (cache miss)", elapsed)
        return PreparedAudio(limited, tokens.codec_ids, mel, speaker)

    def codec_ids(self, audio: Audio) -> list[int]:
        """Codec ids (0..5119, interleaved 2:3) of an audio, as the LLM sees it (uncached)."""
        return self._parts().audio_tokenizer.tokenize(Audio(limit_peak(audio.samples), audio.sample_rate)).codec_ids

    # -------------------------------------------------------------- prompt ids
    def sentences(self, text: str) -> list[str]:
        """A clone text as the pieces generated together: one, or its sentences when long."""
        if len(text) <= SENTENCE_MAX_CHARS:
            return [text]
        from runners.text.split import split_text

        return split_text(text, max_chars=SENTENCE_MAX_CHARS)

    def clone_prompt_ids(self, prompt: PreparedAudio, prompt_text: str, target_text: str) -> list[int]:
        builder = self._parts().prompt_builder
        speaker = builder.speaker_id(prompt_text, prompt.audio.samples.numpy())  # the release's rule
        ids = builder.clone(prompt_text, prompt.codec_ids, target_text, speaker)
        self._check_budget(ids, expected_output_s=0)
        return ids

    def edit_prompt_ids(self, prompt: PreparedAudio, audio_text: str | None, edit: EditPass) -> list[int]:
        instruction = edit_instruction(edit.edit_type, edit.edit_info, audio_text, edit.target_text)
        ids = self._parts().prompt_builder.edit(instruction, prompt.codec_ids)
        self._check_budget(ids, expected_output_s=prompt.audio.duration_s)
        return ids

    def _check_budget(self, prompt_ids: list[int], expected_output_s: float) -> None:
        """Reject prompts that leave the LLM no room to answer."""
        budget = self.config.max_total_tokens
        needed = len(prompt_ids) + int(expected_output_s * TOKENS_PER_SECOND)
        if len(prompt_ids) >= budget or needed > budget:
            raise InputTooLargeError(
                f"the request needs about {needed} LLM tokens (prompt {len(prompt_ids)}); the limit is {budget}. "
                "Use shorter audio or text.",
                field="audio",
            )
