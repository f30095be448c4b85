"""The Gradio UI: clone and iterative editing over the ONE engine of the process.

``build_ui(get_engine)`` builds the Blocks; every callback asks ``get_engine()``
for the engine the API uses (no second model, no HTTP round trip). The
callback logic lives in plain functions (:func:`clone_action`,
:func:`edit_action`) so tests can drive it without a browser.

Iterative editing follows the official demo's chat view: CLONE starts a new
history; each EDIT works on the newest output of the history (or, when the
history is empty, on the uploaded/recorded audio with the prompt text as its
transcript); Clear empties it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio
import gradio as gr
from pydantic import BaseModel

from api.audio_out import to_s16
from api.logs import LogRecordOut
from api.logs import installed as installed_log_buffer
from api.status import TINY_NOTE, build_status, require_ready
from api.uploads import read_upload
from runners.config import EngineConfig
from runners.text.vocab import VOCABULARY
from runners.engine import EditXEngine
from runners.errors import USER_ERRORS, EngineUnavailableError, InvalidInputError
from runners.jobs import CloneJob, EditJob, Progress, parse_instructions
from runners.voices import VoiceRegistry
from ui.controls import add_markup_controls
from ui.dialogue import SCRIPT_HELP, add_line, dialogue_action, edit_choices, example_script
from ui.outputs import summary as _summary
from ui.outputs import write_output

EngineGetter = Callable[[], EditXEngine]
T = TypeVar("T")
EDIT_TYPES: list[str] = [s.name for s in VOCABULARY.edit_types]

def help_text(config: EngineConfig) -> str:
    """The first tab's help, with the limits in force (they come from the environment)."""
    return f"""
**CLONE** speaks *Target text* in the voice of the input audio and starts a new history. *Prompt text* is
the exact transcript of the input audio; leave it empty to have it transcribed (or press **Transcribe**).
**EDIT** changes the newest audio of the history (or the input audio when the
history is empty) and adds the result to the history, so edits can be stacked. *Edits after CLONE* applies
edit values to the clone in one go (as `instructions` does in the API), each pass seeded after the clone.
Paralinguistic edits need *Target text*: the transcript with tags inserted where the sound goes, e.g.
`Great[Laughter], the weather is so nice today[Surprise-ah].` Tags: {" ".join(VOCABULARY.paralinguistic_tags)}.
**Voices** keep an input audio (with its prompt text, or Whisper's) under a name: *CLONE with voice* then
needs no upload and skips preparing the prompt; the same voices serve `/v1/audio/speech`. *Stream* plays the
speech while it is made. **Dialogue** (next tab) speaks a script of lines in several saved voices.
Input audio: 0.1 s to {config.max_audio_s:g} s as a CLONE prompt or voice (EDITX_MAX_AUDIO_S). **EDIT** takes
recordings up to {config.max_edit_audio_s:g} s (EDITX_MAX_EDIT_AUDIO_S): one longer than {config.max_audio_s:g} s is
cut at its pauses and edited in pieces (the progress bar counts them); paralinguistic edits take
{config.max_audio_s:g} s at most.
"""


class HistoryItem(BaseModel):
    """One generated audio of the session: what made it, where it is, what it says."""

    label: str
    path: str
    text: str  # transcript of this audio: the next edit quotes it


# ------------------------------------------------------------------ helpers
def banner_text(engine: EditXEngine | None) -> str:
    """Plain status line: tiny-model warning first, then loading/failed state."""
    if engine is None:
        return "⏳ The service is starting."
    parts: list[str] = []
    if engine.is_tiny:
        parts.append(f"⚠️ **{TINY_NOTE}.** Point EDITX_MODEL_PATH at the real model for speech.")
    if engine.state == "failed":
        parts.append(f"❌ The model failed to load: `{engine.error}`")
    elif engine.state != "loaded":
        parts.append("⏳ The model is loading; CLONE and EDIT work once it is ready.")
    return "\n\n".join(parts)


def _seed(value: float | int | None) -> int | None:
    """Negative or blank means a random seed."""
    return None if value is None or value == "" or int(value) < 0 else int(value)


def _engine_or_none(get_engine: EngineGetter) -> EditXEngine | None:
    try:
        return get_engine()
    except Exception:  # the service is not instantiated yet
        return None


def _ready_engine(get_engine: EngineGetter) -> EditXEngine:
    engine = _engine_or_none(get_engine)
    if engine is None:
        raise EngineUnavailableError("the service is still starting; try again in a moment")
    require_ready(engine)
    return engine


def history_messages(history: list[HistoryItem]) -> list[dict[str, Any]]:
    """Chat view of the history: the request as the user turn, the audio as the answer."""
    messages: list[dict[str, Any]] = []
    for item in history:
        messages.append({"role": "user", "content": item.label})
        messages.append({"role": "assistant", "content": {"path": item.path, "mime_type": "audio/wav"}})
    return messages


def status_markdown(engine: EditXEngine | None) -> str:
    """The operator's view in a few lines: state, idle timer, memory, cache, ASR."""
    if engine is None:
        return "⏳ The service is starting."
    st = build_status(engine)
    cache, asr, mem = st.cache or {}, st.asr or {}, st.memory
    lines = [f"**Engine** {st.state} on {st.device} (LLM {st.llm_dtype}), loaded {st.load_count}×"]
    llm_line = f"**LLM variant** {st.llm_quantization or 'none'}"
    if st.llm_weights:
        llm_line += f", weights {st.llm_weights['total_mb']:.1f} MiB ({st.llm_weights['total_vs_bf16']:.0%} of bf16)"
    if st.llm_quantization_note:
        llm_line += f"; {st.llm_quantization_note}"
    lines.append(llm_line)
    if st.error:
        lines.append(f"**Error** `{st.error}`")
    idle = f"**Idle** {st.idle_s or 0:.0f} s"
    if st.time_until_unload_s is not None:
        idle += f", {st.idle_action_effective or st.idle_action} in {st.time_until_unload_s:.0f} s"
    elif not st.idle_unload_s:
        idle += " (idle unload off)"
    lines.append(idle)
    memory = f"**Memory** RSS {mem.rss_mb or 0:.0f} MiB"
    if mem.gpu_allocated_mb is not None:
        memory += f", GPU {mem.gpu_allocated_mb:.0f} MiB allocated / {mem.gpu_reserved_mb or 0:.0f} MiB reserved"
    lines.append(memory)
    lines.append(
        f"**Prompt cache** {cache['entries']} entries ({cache['bytes'] / 2**20:.1f} MiB), "
        f"{cache['hits']} hits / {cache['misses']} misses (hit rate {cache['hit_rate']:.0%}), "
        f"{cache['time_saved_s']:.2f} s saved"
    )
    if st.decoder is not None:
        dec = st.decoder
        lines.append(f"**Decoder** {dec.batches} batches (up to {dec.max_batch} decodes each, mean "
                     f"{dec.mean_batch_size:.1f}, {dec.mean_batch_seconds * 1000:.0f} ms), {dec.queue_depth} waiting")
    auto = "on" if st.auto_transcribe else "off"
    lines.append(f"**ASR** {asr['model']} on {asr['device']} ({asr['compute_type']}), "
                 f"{'loaded' if asr['loaded'] else 'not loaded'}; auto-transcription {auto}")
    return "  \n".join(lines)


def logs_text(records: list[LogRecordOut]) -> str:
    """Log records as the panel shows them, oldest first."""
    return "\n".join(f"{r.time[11:23]} {r.level:<7} {r.logger}: {r.message}" for r in records)


def recent_logs(limit: int = 200) -> str:
    buffer = installed_log_buffer()
    return logs_text(buffer.records(limit=limit)) if buffer is not None else "(log capture is not installed)"


# ---------------------------------------------------------------- actions
# Each action builds one engine job and runs it through engine.run, as the API routes do.
def transcribe_action(engine: EditXEngine, audio_path: str | None) -> str:
    """The input audio's transcript, for the Prompt text box."""
    if not audio_path:
        raise InvalidInputError("upload or record an audio first", field="audio")
    audio = read_upload(audio_path, "audio", engine.config.max_upload_bytes)
    heard = engine.transcribe(audio)
    if not heard.text:
        raise InvalidInputError("no speech was recognized in the audio", field="audio")
    return heard.text


def clone_job(engine: EditXEngine, voice_id: str | None, audio_path: str | None, prompt_text: str,
              target_text: str, seed: int | None, instructions: str = "") -> CloneJob:
    """The clone the UI asks for: in a registered voice when one is chosen, else in the input audio's."""
    edits = parse_instructions(instructions)
    if voice_id:
        return CloneJob(target_text, voice=voice_id, seed=seed, edits=edits)
    if not audio_path:
        raise InvalidInputError("upload or record the prompt audio first (or choose a voice)", field="prompt_audio")
    prompt = read_upload(audio_path, "prompt_audio", engine.config.max_upload_bytes)
    return CloneJob(target_text, prompt, prompt_text or None, seed=seed, edits=edits)


def clone_action(
    engine: EditXEngine,
    audio_path: str | None,
    prompt_text: str,
    target_text: str,
    seed: int | None,
    progress: Progress,
    cancel: threading.Event | None = None,
    instructions: str = "",
    voice_id: str | None = None,
) -> tuple[str, list[HistoryItem], str]:
    """Clone (then any edit passes); returns (output wav path, the NEW history, summary). ``cancel`` aborts it."""
    job = clone_job(engine, voice_id, audio_path, prompt_text, target_text, seed, instructions)
    syn = engine.run(job, progress=progress, cancel=cancel).collect()
    path = write_output(syn)
    who = f" ({voice_id})" if voice_id else ""
    edits = f" → {', '.join(e.label() for e in job.edits)}" if job.edits else ""
    item = HistoryItem(label=f"CLONE{who}: {target_text.strip()}{edits}", path=path, text=target_text.strip())
    return path, [item], _summary(syn)


def edit_action(
    engine: EditXEngine,
    history: list[HistoryItem],
    audio_path: str | None,
    prompt_text: str,
    edit_type: str,
    edit_info: str | None,
    target_text: str,
    n_edit_iter: int,
    seed: int | None,
    progress: Progress,
    cancel: threading.Event | None = None,
) -> tuple[str, list[HistoryItem], str]:
    """Edit the newest history audio (or the input audio); returns (path, history + new item, summary)."""
    if history:
        source_path, transcript = history[-1].path, history[-1].text
    elif audio_path:
        source_path, transcript = audio_path, prompt_text
    else:
        raise InvalidInputError("upload or record an audio first (or CLONE one)", field="audio")
    spec = VOCABULARY.spec(edit_type)
    audio = read_upload(source_path, "audio", engine.config.max_upload_bytes)
    job = EditJob(audio, edit_type, edit_info or None, transcript or None,
                  target_text if spec.needs_target_text else None, int(n_edit_iter), seed)
    syn = engine.run(job, progress=progress, cancel=cancel).collect()
    path = write_output(syn)
    what = f"EDIT {edit_type}" + (f" → {edit_info}" if edit_info else "")
    if int(n_edit_iter) > 1:
        what += f" ×{int(n_edit_iter)}"
    new_text = target_text.strip() if spec.needs_target_text else transcript
    # A long recording is edited in pieces, one caption each: say so beside the timings.
    pieces = f"edited in {len(syn.captions)} pieces; " if len(syn.captions) > 1 else ""
    return path, [*history, HistoryItem(label=what, path=path, text=new_text or "")], pieces + _summary(syn)


# ---------------------------------------------------------------- voices
def voice_choices(voices: VoiceRegistry) -> list[tuple[str, str]]:
    """(label, id) of every registered voice, for the dropdown."""
    return [(f"{v.name} — {v.text[:40]}" + ("…" if len(v.text) > 40 else ""), v.id) for v in voices.all()]


def save_voice_action(engine: EditXEngine, audio_path: str | None, name: str, prompt_text: str) -> str:
    """Register the input audio (and its prompt text, or Whisper's) as a named voice; returns its id."""
    if not audio_path:
        raise InvalidInputError("upload or record the voice's audio first", field="audio")
    audio = read_upload(audio_path, "audio", engine.config.max_upload_bytes)
    return engine.create_voice((name or "").strip(), audio, prompt_text or None).id


def stream_clone_action(
    engine: EditXEngine, voice_id: str | None, audio_path: str | None, prompt_text: str, target_text: str,
    seed: int | None, instructions: str = "",
) -> Iterator[tuple[int, Any]]:
    """Clone and yield (sample rate, int16 samples) pieces as they are made, for streamed playback.

    With a chosen voice it speaks in that voice, otherwise in the input audio's.
    """
    job = clone_job(engine, voice_id, audio_path, prompt_text, target_text, seed, instructions)
    chunks = engine.run(job, stream=True)
    try:
        for chunk in chunks:
            if chunk.samples.size:
                yield chunk.sample_rate, to_s16(chunk.samples)
    finally:
        chunks.close()


def gradio_progress(progress: gr.Progress) -> Progress:
    """The engine's progress callback feeding a Gradio progress bar (the engine's fractions never step back)."""

    def report(stage: str, fraction: float) -> None:
        progress(fraction, desc=stage)

    return report


async def cancellable(call: Callable[[threading.Event], T]) -> T:
    """``call(cancel)`` in a worker thread; when Gradio cancels the event (Stop, or the page goes), set ``cancel``.

    The thread is abandoned on cancellation, and the engine then aborts its request within one step.
    """
    cancel = threading.Event()
    try:
        return await anyio.to_thread.run_sync(call, cancel, abandon_on_cancel=True)
    except BaseException:
        cancel.set()
        raise


# --------------------------------------------------------------------- UI
def build_ui(get_engine: EngineGetter) -> gr.Blocks:
    """The Blocks (not launched: the service mounts it); the banner is filled from the engine on page load."""

    async def on_clone(audio_path, prompt_text, target_text, seed, instructions="",  # noqa: ANN001, ANN202
                       progress=gr.Progress()):
        try:
            engine = _ready_engine(get_engine)
            path, history, summary = await cancellable(lambda cancel: clone_action(
                engine, audio_path, prompt_text, target_text, _seed(seed), gradio_progress(progress), cancel,
                instructions or "",
            ))
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        return path, history, history_messages(history), summary

    async def on_edit(history, audio_path, prompt_text, edit_type, edit_info, target_text, n_iter,  # noqa: ANN001, ANN202
                      seed, progress=gr.Progress()):
        try:
            engine = _ready_engine(get_engine)
            items = [HistoryItem.model_validate(h) for h in (history or [])]
            path, items, summary = await cancellable(lambda cancel: edit_action(
                engine, items, audio_path, prompt_text, edit_type, edit_info, target_text, n_iter,
                _seed(seed), gradio_progress(progress), cancel,
            ))
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        return path, items, history_messages(items), summary

    def on_type(edit_type: str):  # noqa: ANN202
        spec = VOCABULARY.spec(edit_type)
        hint = spec.description
        if spec.needs_target_text:
            hint += " — put the tagged transcript in Target text"
        return (
            gr.update(choices=spec.values, value=spec.values[0] if spec.values else None,
                      interactive=bool(spec.values), visible=bool(spec.values)),
            hint,
        )

    def on_transcribe(audio_path):  # noqa: ANN001, ANN202
        try:
            return transcribe_action(_ready_engine(get_engine), audio_path)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None

    def on_tick():  # noqa: ANN202
        engine = _engine_or_none(get_engine)
        return banner_text(engine), status_markdown(engine), recent_logs()

    def on_clear_cache():  # noqa: ANN202
        engine = _engine_or_none(get_engine)
        if engine is not None:
            dropped = engine.clear_prompt_cache()
            gr.Info(f"Prompt cache cleared ({dropped} entries)")
        return status_markdown(engine)

    def on_clear():  # noqa: ANN202
        return None, [], [], ""

    def registry() -> VoiceRegistry:
        engine = _engine_or_none(get_engine)
        if engine is None:
            raise EngineUnavailableError("the service is still starting; try again in a moment")
        return engine.voices

    def on_voices_refresh(selected=None):  # noqa: ANN001, ANN202
        try:
            choices = voice_choices(registry())
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        ids = [c[1] for c in choices]
        return gr.update(choices=choices, value=selected if selected in ids else (ids[0] if ids else None))

    def on_save_voice(audio_path, name, prompt_text):  # noqa: ANN001, ANN202
        try:
            voice_id = save_voice_action(_ready_engine(get_engine), audio_path, name, prompt_text)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(f"Voice {voice_id!r} saved")
        return on_voices_refresh(voice_id)

    def on_delete_voice(voice_id):  # noqa: ANN001, ANN202
        try:
            if not voice_id:
                raise InvalidInputError("choose a voice to delete", field="voice")
            registry().delete(voice_id)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        gr.Info(f"Voice {voice_id!r} deleted")
        return on_voices_refresh()

    async def on_clone_voice(voice_id, target_text, seed, instructions="",  # noqa: ANN001, ANN202
                             progress=gr.Progress()):
        try:
            if not voice_id:
                raise InvalidInputError("choose a voice first (or save the input audio as one)", field="voice")
            engine = _ready_engine(get_engine)
            path, history, summary = await cancellable(lambda cancel: clone_action(
                engine, None, "", target_text, _seed(seed), gradio_progress(progress), cancel, instructions or "",
                voice_id,
            ))
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        return path, history, history_messages(history), summary

    def on_stream(voice_id, audio_path, prompt_text, target_text, seed, instructions=""):  # noqa: ANN001, ANN202
        try:
            engine = _ready_engine(get_engine)
            yield from stream_clone_action(engine, voice_id, audio_path, prompt_text, target_text, _seed(seed),
                                           instructions or "")
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None

    async def on_dialogue(script, seed, progress=gr.Progress()):  # noqa: ANN001, ANN202
        try:
            engine = _ready_engine(get_engine)
            result = await cancellable(lambda cancel: dialogue_action(
                engine, script or "", _seed(seed), gradio_progress(progress), cancel,
            ))
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        return result.audio_path, result.srt, result.caption_files, result.summary

    def on_add_line(script, voice, edits, text):  # noqa: ANN001, ANN202
        try:
            return add_line(script, voice, edits, text), ""
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None

    def on_example_script():  # noqa: ANN202
        engine = _engine_or_none(get_engine)
        return example_script([v.id for v in engine.voices.all()] if engine is not None else [])

    first = VOCABULARY.edit_types[0]
    config = EngineConfig.from_env()  # the limits the hints quote: the service's engine reads the same environment
    # Gradio keeps every upload in its cache folder: files older than an hour go, checked every 10 min.
    with gr.Blocks(title="Step-Audio-EditX", delete_cache=(600, 3600)) as demo:
        gr.Markdown("# Step-Audio-EditX\nZero-shot voice cloning and expressive speech editing.")
        banner = gr.Markdown("", elem_id="editx-banner")
        history_state = gr.State([])
        with gr.Tabs(elem_id="editx-tabs"):
            with gr.Tab("Clone & edit", id="clone-edit", elem_id="editx-tab-clone"):
                with gr.Row():
                    with gr.Column():
                        audio_in = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                            label=f"Input audio (a voice prompt up to {config.max_audio_s:g} s, "
                                                  f"or audio to edit up to {config.max_edit_audio_s:g} s)",
                                            elem_id="editx-input-audio")
                        prompt_text = gr.Textbox(label="Prompt text (transcript of the input audio)", lines=2,
                                                 elem_id="editx-prompt-text")
                        transcribe_btn = gr.Button("Transcribe input audio into Prompt text", size="sm",
                                                   elem_id="editx-transcribe")
                        target_text = gr.Textbox(label="Target text (what to say / tagged text for paralinguistic)",
                                                 lines=2, max_length=config.max_text_chars,
                                                 elem_id="editx-target-text")
                        add_markup_controls(target_text)
                        with gr.Row():
                            edit_type = gr.Dropdown(EDIT_TYPES, value=first.name, label="Edit type",
                                                    elem_id="editx-edit-type")
                            edit_info = gr.Dropdown(first.values, value=first.values[0], label="Edit value",
                                                    elem_id="editx-edit-info")
                        type_hint = gr.Markdown(first.description)
                        instructions = gr.Textbox(label="Edits after CLONE (optional): comma-separated edit values, "
                                                        "e.g. 'happy' or 'whisper, slower'", lines=1,
                                                  elem_id="editx-instructions")
                        with gr.Row():
                            n_iter = gr.Slider(1, 5, value=1, step=1, label="Edit passes (n_edit_iter)")
                            seed = gr.Number(value=-1, precision=0, minimum=-1, label="Seed (-1 = random)")
                        with gr.Row():
                            clone_btn = gr.Button("CLONE", variant="primary", elem_id="editx-clone")
                            edit_btn = gr.Button("EDIT", variant="primary", elem_id="editx-edit")
                            clear_btn = gr.Button("Clear history", elem_id="editx-clear")
                            stop_btn = gr.Button("Stop", variant="stop", elem_id="editx-stop")
                        gr.Markdown(help_text(config))
                    with gr.Column():
                        audio_out = gr.Audio(type="filepath", label="Output", interactive=False,
                                             waveform_options=gr.WaveformOptions(show_recording_waveform=True),
                                             buttons=["download"], elem_id="editx-output")
                        summary = gr.Markdown(elem_id="editx-summary")
                        chat = gr.Chatbot(label="History (EDIT works on the newest audio)", height=420,
                                          elem_id="editx-history")
                with gr.Accordion("Voices: save the input audio under a name, clone with it, stream", open=True):
                    with gr.Row():
                        voice_name = gr.Textbox(label="Voice name (A–Z a–z 0–9 _ -, up to 64)", max_length=64,
                                                elem_id="editx-voice-name")
                        save_voice_btn = gr.Button("Save input audio as voice", elem_id="editx-save-voice")
                    with gr.Row():
                        # Custom values are allowed so that API clients (gradio_client) may name any registered voice:
                        # the choices shown are refreshed from the registry, and the handler checks the id there.
                        voice_pick = gr.Dropdown([], value=None, label="Registered voice", allow_custom_value=True,
                                                 elem_id="editx-voice")
                        refresh_voices_btn = gr.Button("Refresh", size="sm", elem_id="editx-refresh-voices")
                        delete_voice_btn = gr.Button("Delete voice", size="sm", variant="stop",
                                                     elem_id="editx-delete-voice")
                    with gr.Row():
                        clone_voice_btn = gr.Button("CLONE with voice", variant="primary", elem_id="editx-clone-voice")
                        stream_btn = gr.Button("Stream (plays while it is made; voice, or the input audio)",
                                               elem_id="editx-stream")
                    stream_out = gr.Audio(streaming=True, autoplay=True, interactive=False, label="Streamed playback",
                                          elem_id="editx-stream-output")
            with gr.Tab("Dialogue", id="dialogue", elem_id="editx-tab-dialogue"):
                gr.Markdown(SCRIPT_HELP)
                with gr.Row():
                    with gr.Column(scale=3):
                        script_box = gr.Textbox(label="Script", lines=12, max_lines=40, elem_id="editx-script")
                        with gr.Row(equal_height=True):
                            with gr.Column(scale=2, min_width=200):
                                # Custom values: a voice saved elsewhere (API, another session) before a Refresh.
                                line_voice = gr.Dropdown([], value=None, label="Voice of the new line",
                                                         allow_custom_value=True, elem_id="editx-line-voice")
                                refresh_line_voices_btn = gr.Button("Refresh voices", size="sm",
                                                                    elem_id="editx-refresh-line-voices")
                            line_edits = gr.Dropdown(edit_choices(), value=[], multiselect=True, scale=3,
                                                     label="Edits after the line (optional, in order)",
                                                     elem_id="editx-line-edits")
                        with gr.Row(equal_height=True):
                            line_text = gr.Textbox(label="Line text", lines=1, scale=4, elem_id="editx-line-text")
                            add_line_btn = gr.Button("Add line", scale=1, elem_id="editx-add-line")
                        with gr.Row():
                            dialogue_seed = gr.Number(value=-1, precision=0, minimum=-1,
                                                      label="Seed (-1 = random)", elem_id="editx-dialogue-seed")
                            dialogue_btn = gr.Button("Generate dialogue", variant="primary",
                                                     elem_id="editx-dialogue-generate")
                            dialogue_stop_btn = gr.Button("Stop", variant="stop", elem_id="editx-dialogue-stop")
                    with gr.Column(scale=2):
                        dialogue_out = gr.Audio(type="filepath", label="Dialogue", interactive=False,
                                                buttons=["download"], elem_id="editx-dialogue-output")
                        dialogue_summary = gr.Markdown(elem_id="editx-dialogue-summary")
                        captions_box = gr.Textbox(label="Captions (SRT)", lines=10, max_lines=20, interactive=False,
                                                  buttons=["copy"], elem_id="editx-captions")
                        caption_files = gr.File(label="Caption files (.srt, .vtt)", file_count="multiple",
                                                interactive=False, elem_id="editx-caption-files")
        with gr.Accordion("Service: status, prompt cache, live log", open=False):
            status_md = gr.Markdown(elem_id="editx-status")
            clear_cache_btn = gr.Button("Clear prompt cache", size="sm", elem_id="editx-clear-cache")
            log_box = gr.Textbox(label="Live log (newest last)", lines=12, max_lines=12, interactive=False,
                                 autoscroll=True, elem_id="editx-log")
        timer = gr.Timer(2.0)

        outputs = [audio_out, history_state, chat, summary]
        # No per-event limit on generation: the engine batches concurrent requests and bounds them itself.
        clone_evt = clone_btn.click(on_clone, [audio_in, prompt_text, target_text, seed, instructions], outputs,
                                    concurrency_limit=None, api_name="clone")
        edit_evt = edit_btn.click(on_edit, [history_state, audio_in, prompt_text, edit_type, edit_info, target_text,
                                            n_iter, seed], outputs, concurrency_limit=None, api_name="edit")
        clear_btn.click(on_clear, None, outputs, api_name=False)
        # The Dialogue tab's voice picker follows the registry as the Voices section changes it.
        save_voice_btn.click(on_save_voice, [audio_in, voice_name, prompt_text], voice_pick, concurrency_limit=1,
                             api_name=False).then(on_voices_refresh, line_voice, line_voice, api_name=False)
        refresh_voices_btn.click(on_voices_refresh, voice_pick, voice_pick, api_name=False)
        delete_voice_btn.click(on_delete_voice, voice_pick, voice_pick, api_name=False).then(
            on_voices_refresh, line_voice, line_voice, api_name=False)
        clone_voice_evt = clone_voice_btn.click(on_clone_voice, [voice_pick, target_text, seed, instructions], outputs,
                                                concurrency_limit=None, api_name="clone_voice")
        stream_evt = stream_btn.click(on_stream, [voice_pick, audio_in, prompt_text, target_text, seed, instructions],
                                      stream_out,
                                      concurrency_limit=None, api_name=False)
        # Stop aborts what runs: the engine drops the request within one step (a stream closes).
        stop_btn.click(None, None, None, cancels=[clone_evt, edit_evt, clone_voice_evt, stream_evt], api_name=False)
        dialogue_evt = dialogue_btn.click(on_dialogue, [script_box, dialogue_seed],
                                          [dialogue_out, captions_box, caption_files, dialogue_summary],
                                          concurrency_limit=None, api_name="dialogue")
        dialogue_stop_btn.click(None, None, None, cancels=[dialogue_evt], api_name=False)
        add_line_btn.click(on_add_line, [script_box, line_voice, line_edits, line_text], [script_box, line_text],
                           api_name=False)
        refresh_line_voices_btn.click(on_voices_refresh, line_voice, line_voice, api_name=False)
        edit_type.change(on_type, edit_type, [edit_info, type_hint], api_name=False)
        transcribe_btn.click(on_transcribe, audio_in, prompt_text, concurrency_limit=1, api_name=False)
        clear_cache_btn.click(on_clear_cache, None, status_md, api_name=False)
        timer.tick(on_tick, None, [banner, status_md, log_box], api_name=False, show_progress="hidden",
                   queue=False)
        demo.load(on_tick, None, [banner, status_md, log_box], api_name=False)
        demo.load(on_voices_refresh, None, voice_pick, api_name=False)
        demo.load(on_voices_refresh, None, line_voice, api_name=False)
        demo.load(on_example_script, None, script_box, api_name=False)
    demo.queue(default_concurrency_limit=1)
    return demo
