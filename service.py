"""editx-serve: Step-Audio-EditX as ONE BentoML service (API + Gradio UI + docs + health, one port).

Thin glue only: the model lives in :class:`runners.engine.EditXEngine` (one per
process), everything HTTP in ``api`` (the audio APIs' bodies in ``api.native.audio``,
the other routes, error mapping, the upload cap, logs), the UI in ``ui``. This file
declares: the image, the service, the typed audio APIs, the middlewares.

Routes: POST /clone, POST /edit, POST /dialogue (audio bytes back, metadata in
X-EditX-* headers; with ``captions`` JSON or server-sent events), POST /transcribe,
GET /status, GET /vocabulary, GET /logs,
POST /cache/clear, /ui (Gradio), / (Swagger), /docs.json (OpenAPI),
/healthz /livez /readyz /metrics (BentoML); the tasks /tasks/clone and /tasks/edit
(BentoML's submit/status/get/cancel/retry below each; api.native.tasks).
"""

from __future__ import annotations

import logging
import threading
import tomllib
from pathlib import Path
from typing import Annotated, Any

import bentoml
import gradio as gr
from bentoml.validators import ContentType
from pydantic import Field
from starlette.requests import Request

from api import metrics
from api.admission import AdmissionMiddleware
from api.app import build_app
from api.auth import AuthMiddleware
from api.deps import current_engine, current_service, current_settings
from api.audio_out import AudioFormat
from api.engine_metrics import PrometheusEvents
from api.errors import PlainRefusalMiddleware, quiet_bentoml_validation_errors
from api.forms import BodySpec, FormGuardMiddleware, bentoml_body_specs, fastapi_body_specs
from api.logs import install as install_log_buffer
from api.openapi import OpenAPIMiddleware
from api.settings import HttpSettings
from api.captions import CAPTIONS_DESCRIPTION, CaptionFormat
from api.native import audio as native_audio
from api.native import dialogue as native_dialogue
from api.native.dialogue import DialogueRequest, DialogueScript
from api.native import tasks as native_tasks
from api.uploads import FORM_OVERHEAD_BYTES, UploadLimitMiddleware
from runners.config import EngineConfig
from runners.text.vocab import VOCABULARY
from runners.engine import EditXEngine
from runners.tasks import TaskStore
from runners import privacy
from runners.models.asr import Transcription
from ui import build_ui

log = logging.getLogger("editx.service")
LOGS = install_log_buffer("editx", include_access_log=True)  # what GET /logs and the UI log panel show
metrics.install()  # /metrics labels by route template, never by raw path
quiet_bentoml_validation_errors()  # a client's validation error is INFO without traceback, not ERROR

_HERE = Path(__file__).resolve().parent
_EDIT_TYPES = [s.name for s in VOCABULARY.edit_types]


# The fields of the audio APIs, declared once: /clone and the clone task, /edit and the edit task take the same.
_TARGET_TEXT = Field(description="what the cloned voice should say; long texts are split into "
                                 "sentences and generated together. It may start with a language "
                                 "tag ([Japanese], [Korean], [Cantonese], [Sichuanese]) and carry "
                                 "sound tags ([laugh], [sigh], … see GET /vocabulary) and "
                                 "pronunciation marks (pinyin + tone, e.g. guo4)")
_PROMPT_AUDIO = Field(None, description="voice to clone: WAV/FLAC/OGG/MP3/WebM/M4A/AAC, 0.1–30 s "
                                        "(any declared type); or give `voice`")
_VOICE = Field("", description="id of a voice registered with POST /v1/audio/voices, instead of "
                               "prompt_audio (its transcript is used when prompt_text is empty)")
_PROMPT_TEXT = Field("", description="exact transcript of prompt_audio; empty = transcribed "
                                     "automatically (EDITX_AUTO_TRANSCRIBE)")
_SEED = Field(None, ge=0, le=2**32 - 1, description="fixes sampling; empty = random")
_FORMAT = Field("wav", description="wav, flac, mp3, opus, aac or pcm (16-bit LE mono)")
_SPEED = Field(1.0, description="0.25–4.0: slower or faster speech at the same pitch")
_INSTRUCTIONS = Field("", description="edit passes after the clone, comma-separated values of "
                                      "GET /vocabulary, e.g. 'happy' or 'whisper, slower' (as /v1)")
_EDIT_AUDIO = Field(description="speech to edit: WAV/FLAC/OGG/MP3/WebM/M4A/AAC, 0.1–30 s (any declared type)")
_EDIT_TYPE = Field(description="one of " + ", ".join(_EDIT_TYPES), json_schema_extra={"enum": _EDIT_TYPES})
_EDIT_INFO = Field("", description="value for emotion/style/speed (see GET /vocabulary); "
                                   "empty for paralinguistic/denoise/vad")
_AUDIO_TEXT = Field("", description="transcript of audio (not needed for denoise/vad); "
                                    "empty = transcribed automatically (EDITX_AUTO_TRANSCRIBE)")
_EDIT_TARGET_TEXT = Field("", description="paralinguistic only: the transcript with tags, "
                                          "e.g. 'Great[Laughter], nice day.'")
_N_EDIT_ITER = Field(1, description="edit passes, 1–5; each edits the previous output",
                     json_schema_extra={"minimum": 1, "maximum": 5})


def make_engine() -> EditXEngine:
    """The one engine of this process, configured from EDITX_* variables (tests may replace this)."""
    return EditXEngine(EngineConfig.from_env())


def before_load(engine: EditXEngine) -> None:
    """Hook run in the loader thread right before ``engine.load()``; tests use it to hold loading open."""


def _image() -> bentoml.images.Image:
    """The container: Debian bookworm slim, Debian's Python 3.11, and the wheels' own CUDA libraries.

    The torch CUDA wheels bring the CUDA runtime, cuBLAS, cuDNN and NCCL (nvidia-* packages), so a
    CUDA base image would hold a second copy of them; only the driver (libcuda) comes from the host,
    which the NVIDIA container toolkit mounts. ``distro`` is not one BentoML knows on purpose: its
    default apt step (build-essential, git, gnupg2) is not needed at run time, so the one apt step
    here installs only what is, without recommends. deploy/image/slim-install.sh (embedded here,
    base64) leaves triton out (nothing here compiles kernels; 0.6 GB) and makes ``uv pip install``
    write no bytecode and drop files nothing loads, in the same layer (about 0.6 GB). BentoML's
    Dockerfile runs as the non-root user ``bentoml`` (uid 1034); /data (prompt cache, voices) and
    /models (read-only weights) are the mount points. Python pins come from pyproject.toml, the one
    place they are kept.
    """
    image = (
        bentoml.images.Image(
            base_image="debian:bookworm-slim",
            distro="debian-slim",  # not a BentoML distro: no default apt step (see above)
            python_version="3.11",  # Debian bookworm's python3; uv finds it and downloads nothing
            lock_python_packages=False,  # the heavy pins are exact already; locking needs the index
        )
        .run("apt-get update && apt-get install -q -y --no-install-recommends ca-certificates libsndfile1"
             " python3 python3-pip && apt-get clean && rm -rf /var/lib/apt/lists/*"
             " && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED")  # BentoML installs uv with this pip
        .run("mkdir -p /data/cache /data/voices /models && chown -R bentoml:bentoml /data")
    )
    slim = _HERE / "deploy" / "image" / "slim-install.sh"
    if slim.is_file():  # absent inside the Bento, where the image is not built
        import base64

        image = image.run(f"echo {base64.b64encode(slim.read_bytes()).decode()} | base64 -d | sh")
    pyproject = _HERE / "pyproject.toml"
    if pyproject.is_file():
        # Image.pyproject_toml() refuses absolute paths, and relative ones depend on the cwd.
        deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
        image = image.python_packages(*deps)
    return image


ui_blocks: gr.Blocks = build_ui(current_engine)
web = build_app(ui_blocks)


def _body_limit() -> int:
    """The body cap of the running instance: its engine's upload limit plus the form fields' room."""
    return current_engine().config.max_upload_bytes + FORM_OVERHEAD_BYTES


@bentoml.asgi_app(web, path="/")
@bentoml.service(
    name="editx",
    resources={"gpu": 1},
    workers=1,  # one model copy; Gradio's queue lives in one process
    # No traffic.max_concurrency: it counts EVERY request (it answered 429 to /status and /ui/ under
    # load). api.admission bounds work requests (EDITX_MAX_REQUESTS) and api.uploads the bodies being
    # received (EDITX_MAX_UPLOADS); GPU work is serialized by the engine and Gradio's queue.
    traffic={"timeout": 600},
    image=_image(),
)
class EditXService:
    """Zero-shot voice cloning and expressive speech editing (Step-Audio-EditX)."""

    def __init__(self) -> None:
        self.engine = make_engine()  # the configuration is read from the environment here, once
        self.voices = self.engine.voices  # what /v1/audio/voices, the UI and `voice` use
        self.engine.events = PrometheusEvents()  # editx_* metrics on /metrics
        self.http = HttpSettings.from_env()
        privacy.configure(self.engine.config.log_content)
        self.tasks = TaskStore(self.http.task_ttl_s, int(self.http.task_max_mb * 2**20),
                               on_drop=native_tasks.forget_bentoml_rows)  # jobs that outlive a request
        native_tasks.prepare_result_db()
        if not self.http.keys():
            log.warning("authentication is off: anyone who reaches this port can use every route "
                        "(set EDITX_API_KEYS or EDITX_API_KEYS_FILE)")
        ui_blocks.max_file_size = self.engine.config.max_upload_bytes
        self._loader: threading.Thread | None = None
        if not self.engine.config.lazy_load:  # load in the background: /livez answers, /readyz says 503
            self._loader = threading.Thread(target=self._load, name="editx-load", daemon=True)
            self._loader.start()

    def _load(self) -> None:
        try:
            before_load(self.engine)
            self.engine.load()
        except Exception:  # the engine records state="failed" and the reason; /status shows it
            log.exception("engine load failed; the service stays up and reports it on /status")

    def __is_ready__(self) -> bool:
        return self.engine.ready

    @bentoml.on_shutdown
    def _stop_engine(self) -> None:
        """Stop the engine's idle monitor thread."""
        self.engine.close()

    # ------------------------------------------------------------------ APIs
    # Async, with the engine call in a worker thread: concurrent requests reach the scheduler together.
    # Each route builds one job and hands it to the one answer path (api.engine_calls.answer_job).
    @bentoml.api(route="/clone")
    async def clone(
        self,
        target_text: str = _TARGET_TEXT,
        # `Path` with a None default, not `Path | None`: BentoML 1.4.40 decodes no upload into an optional Path.
        prompt_audio: Path = _PROMPT_AUDIO,  # type: ignore[assignment]
        voice: str = _VOICE,
        prompt_text: str = _PROMPT_TEXT,
        seed: int | None = _SEED,
        response_format: AudioFormat = _FORMAT,
        speed: float = _SPEED,
        instructions: str = _INSTRUCTIONS,
        stream: bool = Field(False, description="send the audio as it is made (wav with an open-ended header, "
                                                "pcm, mp3, opus or aac); flac is never streamed"),
        captions: CaptionFormat | None = Field(None, description=CAPTIONS_DESCRIPTION),
    ) -> Annotated[Path, ContentType("audio/*")]:
        """Speak target_text in the voice of prompt_audio. Returns audio; metadata in X-EditX-* headers."""
        return await native_audio.clone(  # type: ignore[return-value]
            self.engine, current_request(), target_text=target_text, prompt_audio=prompt_audio, voice=voice,
            prompt_text=prompt_text, seed=seed, response_format=response_format, speed=speed,
            instructions=instructions, stream=stream, captions=captions)

    @bentoml.api(route="/dialogue", input_spec=DialogueRequest)
    async def dialogue(self, **body: Any) -> Annotated[Path, ContentType("audio/*")]:
        """Speak a dialogue of registered voices as one audio, from `turns` or a `script`; captions on request."""
        return await native_dialogue.dialogue(  # type: ignore[return-value]
            self.engine, current_request(), DialogueRequest.model_validate(body))

    @bentoml.api(route="/edit")
    async def edit(
        self,
        audio: Path = _EDIT_AUDIO,
        edit_type: str = _EDIT_TYPE,
        edit_info: str = _EDIT_INFO,
        audio_text: str = _AUDIO_TEXT,
        target_text: str = _EDIT_TARGET_TEXT,
        n_edit_iter: int = _N_EDIT_ITER,
        seed: int | None = _SEED,
        response_format: AudioFormat = _FORMAT,
        stream: bool = Field(False, description="send the last pass's audio as it is made (not flac)"),
    ) -> Annotated[Path, ContentType("audio/*")]:
        """Edit emotion, style, speed, paralinguistic sounds, noise or silence of audio."""
        return await native_audio.edit(  # type: ignore[return-value]
            self.engine, current_request(), audio=audio, edit_type=edit_type, edit_info=edit_info,
            audio_text=audio_text, target_text=target_text, n_edit_iter=n_edit_iter, seed=seed,
            response_format=response_format, stream=stream)

    @bentoml.api(route="/transcribe")
    async def transcribe(
        self,
        audio: Path = Field(description="speech: WAV/FLAC/OGG/MP3/WebM/M4A/AAC, 0.1–30 s (any declared type)"),
        language: str = Field("", description="language code such as 'en' or 'zh'; empty = detect"),
    ) -> Transcription:
        """What is said in the audio (faster-whisper), with the detected language and durations."""
        return await native_audio.transcribe(self.engine, audio, language)  # type: ignore[return-value]

    # ------------------------------------------------------------------ tasks
    # Jobs that outlive a request: POST <route>/submit answers a task id at once; GET <route>/status (state,
    # stage, progress), GET <route>/get (the audio; ?captions=true), PUT <route>/cancel. The bodies, and what
    # BentoML does and does not do for tasks, are in api.native.tasks.
    @bentoml.task(route="/tasks/clone")
    async def clone_task(
        self,
        target_text: str = _TARGET_TEXT,
        prompt_audio: Path = _PROMPT_AUDIO,  # type: ignore[assignment]
        voice: str = _VOICE,
        prompt_text: str = _PROMPT_TEXT,
        seed: int | None = _SEED,
        response_format: AudioFormat = _FORMAT,
        speed: float = _SPEED,
        instructions: str = _INSTRUCTIONS,
    ) -> Annotated[Path, ContentType("audio/*")]:
        """A clone (a long text, edit passes) as a task: submit, then poll status and get the audio."""
        return await native_tasks.clone_task(  # type: ignore[return-value]
            self.engine, self.tasks, current_request(), target_text=target_text, prompt_audio=prompt_audio,
            voice=voice, prompt_text=prompt_text, seed=seed, response_format=response_format, speed=speed,
            instructions=instructions)

    @bentoml.task(route="/tasks/edit")
    async def edit_task(
        self,
        audio: Path = _EDIT_AUDIO,
        edit_type: str = _EDIT_TYPE,
        edit_info: str = _EDIT_INFO,
        audio_text: str = _AUDIO_TEXT,
        target_text: str = _EDIT_TARGET_TEXT,
        n_edit_iter: int = _N_EDIT_ITER,
        seed: int | None = _SEED,
        response_format: AudioFormat = _FORMAT,
    ) -> Annotated[Path, ContentType("audio/*")]:
        """An edit (a long audio, several passes) as a task: submit, then poll status and get the audio."""
        return await native_tasks.edit_task(  # type: ignore[return-value]
            self.engine, self.tasks, current_request(), audio=audio, edit_type=edit_type, edit_info=edit_info,
            audio_text=audio_text, target_text=target_text, n_edit_iter=n_edit_iter, seed=seed,
            response_format=response_format)

    @bentoml.task(route="/tasks/dialogue", input_spec=DialogueScript)
    async def dialogue_task(self, **body: Any) -> Annotated[Path, ContentType("audio/*")]:
        """A dialogue (turns or a script) as a task: submit, then poll status and get the audio and captions."""
        return await native_tasks.dialogue_task(  # type: ignore[return-value]
            self.engine, self.tasks, current_request(), DialogueScript.model_validate(body))


def current_request() -> Request | None:
    """The HTTP request being served (to notice a client that goes away), if there is one."""
    try:
        return EditXService.context.request
    except LookupError:
        return None


def _body_routes() -> dict[str, BodySpec]:
    """Every route that takes a body, with what it takes (for the one body guard, api.forms, and the docs)."""
    return {**fastapi_body_specs(web), **bentoml_body_specs(EditXService.apis.values())}


def _task_routes() -> dict[str, str]:
    """Every task's route → its name (status, get and cancel are answered from the task store)."""
    return native_tasks.task_routes(EditXService.apis.values())


def _task_store() -> TaskStore:
    """The running instance's task store (made in its __init__)."""
    return current_service().tasks


# Outermost first: no key → 401 before anything is counted or read; then admission, the upload limits,
# the body guard of every route that takes a body, the tasks' status/get/cancel, the docs, and unknown
# paths in the error shape.
EditXService.add_asgi_middleware(AuthMiddleware, settings=current_settings)
EditXService.add_asgi_middleware(AdmissionMiddleware, settings=current_settings)
EditXService.add_asgi_middleware(UploadLimitMiddleware, max_body_bytes=_body_limit, settings=current_settings)
EditXService.add_asgi_middleware(FormGuardMiddleware, routes=_body_routes)
EditXService.add_asgi_middleware(native_tasks.TaskRoutesMiddleware, routes=_task_routes, store=_task_store)
EditXService.add_asgi_middleware(OpenAPIMiddleware, body_routes=_body_routes, settings=current_settings,
                                 task_routes=_task_routes)
EditXService.add_asgi_middleware(PlainRefusalMiddleware)  # unknown paths and methods through the error table
