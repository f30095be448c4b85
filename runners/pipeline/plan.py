"""Planning: a typed job, checked once, as the independent parts the engine runs together.

Every job is one or more *parts*, each a chain of steps: a clone (a text in a voice, its
sentences generated together) or a piece of audio, then edit passes on the previous step's
output. A clone or a short edit is one part; a dialogue is one part per turn; a recording
longer than the model's window is one part per piece, cut at its pauses. The first steps
of all parts are queued as one scheduler job, and the parts' audio is joined in order with
the silence each part asks for after it (a turn's pause, the pause kept between two pieces).

:func:`plan_job` does every check that needs no model (limits, voices, edit values), so a
bad request fails before anything is loaded or queued; :func:`cut_recording` does the part
that needs Whisper (where the pauses are, what each piece says) when the job starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from runners.audio import Audio
from runners.config import EngineConfig
from runners.errors import InputTooLargeError, InvalidInputError, NotFoundError
from runners.jobs import (
    DEFAULT_PAUSE_MS,
    MAX_PAUSE_MS,
    CloneJob,
    DialogueJob,
    EditJob,
    EditPass,
    Job,
    Progress,
    part_seed,
)
from runners.models.decoder.token2wav import check_speed
from runners.pipeline.prepare import Preparer
from runners.text.vocab import VOCABULARY

log = logging.getLogger("editx.engine")

PIECE_MAX_S = 25.0  # a long recording is edited in pieces at most this long (the model's window is 30 s)
VAD_PAUSE_MAX_S = 0.3  # silence removal keeps at most this much of a pause between two pieces


@dataclass
class Part:
    """One chain of a job: a clone or a piece of audio, then edit passes, and the silence after it."""

    clone: CloneJob | None
    source: Audio | None
    source_text: str | None
    edits: list[EditPass]
    seed: int | None
    pause_after_s: float = 0.0  # 0: the next part follows with a cross-fade
    turn: int | None = None  # dialogue turn index (captions name it)
    voice: str | None = None
    unchanged: bool = False  # a piece where nothing was heard to edit: passed through as it is

    @property
    def steps(self) -> int:
        return 0 if self.unchanged else (1 if self.clone else 0) + len(self.edits)


@dataclass
class Plan:
    """A job after its checks: its parts (a long recording's are cut when the job starts)."""

    job: Job
    parts: list[Part]
    iterations: int  # steps of the longest part (X-EditX-Iterations)
    noun: str = "part"  # how progress names a part: "turn", "piece"
    lead_s: float = 0.0  # silence before the first part (a long recording's, kept)
    tail_s: float = 0.0  # silence after the last part
    long_edit: bool = False  # the recording is longer than the model's window: cut it first

    @property
    def steps(self) -> int:
        return self.iterations


def plan_job(prep: Preparer, config: EngineConfig, job: Job) -> Plan:
    """Everything that can be checked without the model, checked once (errors name the field)."""
    if isinstance(job, CloneJob):
        return Plan(job, [_clone_part(prep, job)], 1 + len(job.edits))
    if isinstance(job, DialogueJob):
        return _plan_dialogue(prep, config, job)
    return _plan_edit(prep, config, job)


def _clone_part(prep: Preparer, job: CloneJob) -> Part:
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
    return Part(clone, None, None, edits, job.seed)


def _plan_dialogue(prep: Preparer, config: EngineConfig, job: DialogueJob) -> Plan:
    """Turns within the limits, every voice registered, every text and edit value allowed."""
    turns = job.turns
    if not turns:
        raise InvalidInputError("the script has no turns", field="turns")
    if len(turns) > config.max_script_turns:
        raise InputTooLargeError(f"the script has {len(turns)} turns; the limit is {config.max_script_turns} "
                                 "(EDITX_MAX_SCRIPT_TURNS)", field="turns")
    voices = list(dict.fromkeys(t.voice for t in turns))
    if len(voices) > config.max_script_voices:
        raise InputTooLargeError(f"the script uses {len(voices)} voices; the limit is {config.max_script_voices} "
                                 "(EDITX_MAX_SCRIPT_VOICES)", field="turns")
    chars = sum(len(t.text.strip()) for t in turns)
    if chars > config.max_text_chars:
        raise InputTooLargeError(f"the script has {chars} characters of text; the limit is {config.max_text_chars} "
                                 "(EDITX_MAX_TEXT_CHARS)", field="turns")
    parts: list[Part] = []
    for i, turn in enumerate(turns):
        where = turn.where(i)
        try:
            prep.voices.get(turn.voice or "", field=f"turns[{i}].voice")
        except NotFoundError as exc:
            raise InvalidInputError(f"{where}: {exc}", field=f"turns[{i}].voice") from exc
        try:
            text = prep.check_clone_text(turn.text, f"turns[{i}].text")
            edits = [prep.check_edit(e) for e in turn.edits]
            if edits:
                prep.check_passes(len(edits), f"turns[{i}].instructions")
        except InvalidInputError as exc:
            raise type(exc)(f"{where}: {exc}", field=exc.field) from exc
        pause = DEFAULT_PAUSE_MS if turn.pause_after_ms is None else turn.pause_after_ms
        if not 0 <= pause <= MAX_PAUSE_MS:
            raise InvalidInputError(f"{where}: pause_after_ms must be between 0 and {MAX_PAUSE_MS} (got {pause})",
                                    field=f"turns[{i}].pause_after_ms")
        seed = part_seed(job.seed, i)
        clone = CloneJob(text, None, None, turn.voice, seed, 1.0, tuple(edits))
        last = i == len(turns) - 1
        parts.append(Part(clone, None, None, edits, seed, 0.0 if last else pause / 1000, turn=i, voice=turn.voice))
    return Plan(job, parts, max(p.steps for p in parts), noun="turn")


def _plan_edit(prep: Preparer, config: EngineConfig, job: EditJob) -> Plan:
    prep.check_audio(job.audio, "audio", max_s=max(config.max_edit_audio_s, config.max_audio_s),
                     setting="EDITX_MAX_EDIT_AUDIO_S")
    edit = prep.check_edit(job.edit)
    prep.check_passes(job.passes)
    text = prep.check_text(job.audio_text, "audio_text", required=False)
    spec = VOCABULARY.spec(edit.edit_type)
    long_edit = job.audio.duration_s > config.max_audio_s
    if long_edit and spec.needs_target_text:
        raise InvalidInputError(
            f"{edit.edit_type} edits need the tagged transcript of the whole audio, so they take at most "
            f"{config.max_audio_s:g} s (this audio is {job.audio.duration_s:.1f} s); cut the recording, or use "
            "denoise, vad, emotion, style or speed, which work on recordings up to "
            f"{config.max_edit_audio_s:g} s", field="edit_type")
    if not text and spec.needs_transcript:
        prep.check_transcribable("audio_text")
    part = Part(None, job.audio, text or None, [edit] * job.passes, job.seed)  # a long one's pieces copy it
    return Plan(job, [part], job.passes, noun="piece", long_edit=long_edit)


def cut_recording(prep: Preparer, plan: Plan, progress: Progress) -> None:
    """A long recording's parts: pieces of at most :data:`PIECE_MAX_S` cut at the pauses Whisper hears.

    Whisper's word timestamps give the pauses and each piece's transcript (a transcript sent with the
    recording is shared out over the pieces by the words heard in each). Without Whisper
    (EDITX_AUTO_TRANSCRIBE off) the pieces are cut at the quietest moments instead. A piece
    where nothing was heard is kept as it is when the edit needs words to work on.
    """
    from runners.pipeline.long_audio import cut_at_pauses, gaps, share_transcript

    job = plan.job
    assert isinstance(job, EditJob)
    audio = job.audio
    samples = audio.samples.numpy()
    segments: list[tuple[float, float, str]] = []
    if prep.config.auto_transcribe:
        progress("finding the pauses (transcribing)", 0.0)
        heard = prep.hear(audio, word_timestamps=True)
        # Words, not segments: a segment runs up to 30 s over several sentences, the pauses lie between words.
        segments = [(w.start, w.end, w.word) for s in heard.segments for w in (s.words or [])]
        if not segments:
            segments = [(s.start, s.end, s.text) for s in heard.segments]
    pieces = cut_at_pauses(samples, audio.sample_rate, segments, max_piece_s=PIECE_MAX_S)
    if not pieces:
        raise InvalidInputError("no sound to edit was found in the audio", field="audio")
    silences = [n / audio.sample_rate for n in gaps(pieces, samples.size)]
    whole = plan.parts[0]  # the checked edit passes and transcript of the whole recording
    edit = whole.edits[0]
    needs_words = VOCABULARY.spec(edit.edit_type).needs_transcript
    if edit.edit_type == "vad":  # silence removal: the pauses between pieces shrink too
        silences = [min(s, VAD_PAUSE_MAX_S) for s in silences]
    texts = share_transcript(whole.source_text, pieces) if whole.source_text else [p.text for p in pieces]
    plan.parts = [
        Part(None, Audio(audio.samples[p.start:p.end].clone(), audio.sample_rate), text.strip() or None,
             whole.edits, part_seed(job.seed, i), silences[i + 1] if i + 1 < len(pieces) else 0.0,
             unchanged=needs_words and not text.strip())
        for i, (p, text) in enumerate(zip(pieces, texts))
    ]
    plan.lead_s, plan.tail_s = silences[0], silences[-1]
    kept = sum(p.unchanged for p in plan.parts)
    log.info("audio of %.1f s cut into %d pieces at its pauses (%d without speech kept as they are)",
             audio.duration_s, len(pieces), kept)
