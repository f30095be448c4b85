"""Jobs that outlive a request: long clones, long edits and dialogues as BentoML tasks.

What ``@bentoml.task`` does in the installed BentoML (1.4.40; read in ``_bentoml_impl/server/app.py``,
``_bentoml_impl/tasks/``, ``_bentoml_sdk/service/openapi.py``, ``_bentoml_impl/client/http.py``):

* Routes, for a task declared at ``route``: ``POST route`` (the plain call, answered at once like any API),
  ``POST route/submit`` (same body), ``GET route/status?task_id=``, ``GET route/get?task_id=``,
  ``POST route/retry?task_id=`` and ``PUT route/cancel?task_id=``. The id and the status/get/cancel
  answers are what ``bentoml.SyncHTTPClient``'s ``client.<name>.submit(...)`` → ``Task`` reads
  (``status`` must be a ``ResultStatus`` value; ``get`` is parsed like the API's own answer). In 1.4.40
  that client's ``submit`` raises ``AttributeError: _opened_files`` after the request was sent (a stale
  attribute), so submit with plain HTTP; its ``Task`` then reads status and result.
* Ids: ``uuid4().hex``, made when submit stores the request (scope and whole body) in a SQLite file
  (``$BENTOML_HOME/task_result.db`` or ``BENTOML_RESULT_STORE``; its table is created only by
  ``bentoml serve``, not by ``to_asgi()``). The task function learns its id from
  ``context.request.state.task_id``; on the plain call that attribute is absent.
* Running: submit answers ``{"task_id", "status": "in_progress"}`` and runs the API as the answer's
  Starlette *background task*, i.e. inside the submit request's own ASGI call after its answer was sent:
  every middleware (auth, admission, the body guard) sees the submit request as usual, admission counts
  the job as in flight until it ends, and BentoML's timeout does not cut it (its timer stops at the first
  byte answered). The function's answer, whatever its size, is stored base64 in that SQLite row.
* Status carries no progress (``task_id``, ``status``, ``created_at``, ``executed_at``); results are
  kept 24 h (old rows are deleted only when another task completes), with no size bound.
* Cancel, outside BentoCloud, marks the row ``canceled`` and answers 400 "not supported in local
  development server": nothing reaches the running coroutine or thread, and the row is marked
  completed anyway when the function returns.
* The body guard (``api.forms``) knew only ``route``: ``route/submit`` is added to its table
  (``bentoml_body_specs``). BentoML's spec documents the sub-routes with a status schema its own
  answers do not match, and gives cancel the operationId of retry; ``api.openapi`` rewrites them.

So BentoML submits and runs the task (and retries it); :class:`TaskRoutesMiddleware` answers status,
get and cancel from this service's :class:`runners.tasks.TaskStore`, which holds progress (the
engine's progress callback), the job's ``cancel`` event (set: its scheduler requests are aborted within
one engine step), and the encoded result under EDITX_TASK_TTL_S / EDITX_TASK_MAX_MB. The function
answers BentoML only a small status body, so the SQLite row stays small; a task dropped from the store
has its row deleted too (it held the submitted upload).
"""

from __future__ import annotations

import datetime
import json
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel, Field
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.audio_out import MEDIA_TYPES, encode, synthesis_headers
from api.captions import CaptionOut, caption_out
from api.errors import ErrorBody, InternalError, answer_for, send_error
from api.native import audio as native_audio
from api.native.dialogue import DialogueScript
from api.status import require_ready
from api.uploads import ASGIApp, Message, Receive, Scope, Send
from runners.engine import EditXEngine
from runners.errors import USER_ERRORS, ConflictError, InvalidInputError, NotFoundError, RequestAbortedError
from runners.jobs import Job
from runners.tasks import TaskEntry, TaskResult, TaskState, TaskStore

log = logging.getLogger("editx.api")

ACTIONS: Mapping[str, str] = {"submit": "POST", "retry": "POST", "status": "GET", "get": "GET", "cancel": "PUT"}


# ---------------------------------------------------------------- answers
class TaskSubmitted(BaseModel):
    """What submit (and retry) answers: the new task's id."""

    task_id: str
    status: Literal["in_progress"] = "in_progress"


class TaskStatus(BaseModel):
    """A task's state and progress (a superset of BentoML's status answer, so its client reads it)."""

    task_id: str
    task: str = Field(description="which task it is (clone_task, edit_task, …)")
    status: Literal["pending", "in_progress", "completed", "failed", "canceled"]
    stage: str = Field(description="what the engine is doing, e.g. 'pass 2/3: generating speech tokens'")
    progress: float = Field(ge=0.0, le=1.0, description="fraction done, 0..1; never goes back")
    created_at: str
    executed_at: str | None = Field(None, description="when it started to run")
    completed_at: str | None = Field(None, description="when it finished (completed, failed or cancelled)")
    expires_in_s: float | None = Field(None, description="finished: seconds until it is forgotten (EDITX_TASK_TTL_S)")
    result_bytes: int | None = Field(None, description="completed: size of the audio GET …/get answers")
    media_type: str | None = None
    error: ErrorBody | None = Field(None, description="failed: what GET …/get answers, with error_status")
    error_status: int | None = None


class TaskCaptions(BaseModel):
    """GET …/get?captions=true: the pieces of a completed task's audio, in order."""

    task_id: str
    captions: list[CaptionOut]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat()


def status_of(entry: TaskEntry, store: TaskStore) -> TaskStatus:
    """The status answer of one task."""
    error = status = None
    if entry.error is not None:
        out = answer_for(entry.error, "", level=logging.DEBUG)
        error, status = ErrorBody(**out.body), out.status
    expires = None
    if entry.finished_mono is not None:
        expires = round(max(0.0, store.ttl_s - (store.clock() - entry.finished_mono)), 1)
    result = entry.result
    return TaskStatus(task_id=entry.task_id, task=entry.name, status=entry.state.value, stage=entry.stage,
                      progress=round(entry.fraction, 4), created_at=_iso(entry.created_at) or "",
                      executed_at=_iso(entry.started_at), completed_at=_iso(entry.finished_at),
                      expires_in_s=expires, result_bytes=result.nbytes if result else None,
                      media_type=result.media_type if result else None, error=error, error_status=status)


# ---------------------------------------------------------------- the task bodies
def task_id_of(request: Request | None) -> str | None:
    """The id BentoML gave the task being run, or None on the plain (answered at once) call."""
    if request is None:
        return None
    task_id = getattr(request.state, "task_id", None)
    return task_id if isinstance(task_id, str) else None


async def run_task(engine: EditXEngine, store: TaskStore, request: Request | None, name: str,
                   make_job: Callable[[], Awaitable[Job]], fmt: str) -> Response:
    """Run one job as task ``name``: progress and the cancel event from the store, the encoded result into it.

    Whatever the job (clone, edit, dialogue), it is run and answered the same way. On the plain call
    (no task id) it is answered at once, like its /clone or /edit twin.
    """
    task_id = task_id_of(request)
    if task_id is None:
        return await native_audio.answer_native(engine, request, make_job, stream=False, fmt=fmt)
    entry = store.start(task_id, name)
    if entry.cancel.is_set():  # cancelled while it waited
        return JSONResponse(status_of(entry, store).model_dump())
    progress = store.progress(task_id)
    try:
        require_ready(engine)
        job = await make_job()
        progress("queued for the engine", 0.0)
        # Not run_cancellable: nobody's connection is watched; only the task's cancel event stops it.
        syn = await anyio.to_thread.run_sync(
            lambda: engine.run(job, progress=progress, cancel=entry.cancel).collect())
        body = await anyio.to_thread.run_sync(encode, syn.samples, syn.sample_rate, fmt)
        store.finish(task_id, TaskResult(body, MEDIA_TYPES[fmt], synthesis_headers(syn, engine.is_tiny),
                                         tuple(syn.captions)))
    except USER_ERRORS as exc:
        answer_for(exc, "")  # logged like the same refusal of a plain request
        store.fail(task_id, exc)
    except RequestAbortedError:
        pass  # cancelled: the store says so already
    except Exception:  # noqa: BLE001 - a bug: the task fails, the log has the traceback
        log.exception("task %s (%s) failed", task_id, name)
        store.fail(task_id, InternalError("the task failed on an internal error; see the server log"))
    return JSONResponse(status_of(entry, store).model_dump())


async def clone_task(engine: EditXEngine, store: TaskStore, request: Request | None, *, target_text: str,
                     prompt_audio: Path | None, voice: str, prompt_text: str, seed: int | None,
                     response_format: str, speed: float, instructions: str) -> Response:
    """POST /tasks/clone[/submit]: a /clone (a long text, edit passes) as a task."""
    async def make() -> Job:
        return await native_audio.clone_job(engine, target_text=target_text, prompt_audio=prompt_audio,
                                            voice=voice, prompt_text=prompt_text, seed=seed, speed=speed,
                                            instructions=instructions)
    return await run_task(engine, store, request, "clone_task", make, response_format)


async def edit_task(engine: EditXEngine, store: TaskStore, request: Request | None, *, audio: Path,
                    edit_type: str, edit_info: str, audio_text: str, target_text: str, n_edit_iter: int,
                    seed: int | None, response_format: str) -> Response:
    """POST /tasks/edit[/submit]: an /edit (a long audio, several passes) as a task."""
    async def make() -> Job:
        return await native_audio.edit_job(engine, audio=audio, edit_type=edit_type, edit_info=edit_info,
                                           audio_text=audio_text, target_text=target_text,
                                           n_edit_iter=n_edit_iter, seed=seed)
    return await run_task(engine, store, request, "edit_task", make, response_format)


async def dialogue_task(engine: EditXEngine, store: TaskStore, request: Request | None,
                        body: DialogueScript) -> Response:
    """POST /tasks/dialogue[/submit]: a /dialogue (many turns, voices) as a task."""
    async def make() -> Job:
        return body.to_job()
    return await run_task(engine, store, request, "dialogue_task", make, body.response_format)


# ---------------------------------------------------------------- status, get, cancel
def task_routes(apis: Iterable[Any]) -> dict[str, str]:
    """Each BentoML task's route → its name (``api.is_task``)."""
    return {api.route: api.name for api in apis if getattr(api, "is_task", False)}


class TaskRoutesMiddleware:
    """Answers ``route/status``, ``route/get`` and ``route/cancel`` of every task from the store.

    ``route/submit`` and ``route/retry`` go on to BentoML, which makes the id and runs the task; their
    answer is read on its way out so the task is known (pending) before the client can ask about it,
    and when their ASGI call ends (the task ran inside it) a task the function never finished is
    marked failed, so no status stays ``pending`` for ever.
    """

    def __init__(self, app: ASGIApp, routes: Callable[[], Mapping[str, str]],
                 store: Callable[[], TaskStore]) -> None:
        self.app = app
        self._routes = routes
        self._store = store
        self._table: Mapping[str, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._table is None:
            self._table = self._routes()
        base, _, action = scope["path"].rpartition("/")
        name = self._table.get(base)
        method = scope.get("method")
        if name is None or ACTIONS.get(action) != ("GET" if method == "HEAD" else method):
            await self.app(scope, receive, send)
            return
        store = self._store()
        query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
        task_id = query.get("task_id")
        try:
            if action == "submit":
                await self._run_and_watch(scope, receive, send, name, store)
                return
            if not task_id:
                raise InvalidInputError("task_id is required: the id submit answered, as ?task_id=…",
                                        field="task_id")
            entry = store.get(task_id)
            if entry.name != name:
                raise NotFoundError(f"no task {task_id!r} of {base} (it is a {entry.name})", field="task_id")
            if action == "retry":
                if not entry.state.finished:
                    raise ConflictError(f"task {task_id} is {entry.state.value}; retry it once it has finished",
                                        field="task_id")
                await self._run_and_watch(scope, receive, send, name, store)
                return
            response = await self._answer(action, task_id, query, store)
        except USER_ERRORS as exc:
            await send_error(send, scope["path"], exc)
            return
        await response(scope, receive, send)

    async def _answer(self, action: str, task_id: str, query: QueryParams, store: TaskStore) -> Response:
        if action == "status":
            return JSONResponse(status_of(store.get(task_id), store).model_dump())
        if action == "cancel":
            return JSONResponse(status_of(store.cancel(task_id), store).model_dump())
        entry = store.result(task_id)  # action == "get"
        result = entry.result
        assert result is not None
        if query.get("captions", "").lower() in ("1", "true", "yes"):
            captions = [caption_out(c) for c in result.captions]
            return JSONResponse(TaskCaptions(task_id=task_id, captions=captions).model_dump())
        ext = next((fmt for fmt, media in MEDIA_TYPES.items() if media == result.media_type), "bin")
        headers = {**result.headers, "X-EditX-Task-Id": task_id,
                   "Content-Disposition": f'attachment; filename="{task_id}.{ext}"'}
        return Response(result.body, media_type=result.media_type, headers=headers)

    async def _run_and_watch(self, scope: Scope, receive: Receive, send: Send, name: str, store: TaskStore) -> None:
        """Pass submit/retry on; register the id it answers; after the task ran, make sure it finished."""
        started: Message | None = None
        body = b""
        task_id: str | None = None

        async def watch(message: Message) -> None:
            nonlocal started, body, task_id
            if message["type"] == "http.response.start":
                started = message
                if message["status"] != 200:
                    await send(message)
                return
            if message["type"] == "http.response.body" and started is not None and started["status"] == 200:
                body += message.get("body", b"")
                if message.get("more_body", False):
                    return
                try:
                    task_id = TaskSubmitted.model_validate(json.loads(body)).task_id
                except ValueError:
                    task_id = None
                if task_id:
                    store.create(task_id, name)
                    log.info("task %s (%s) submitted", task_id, name, extra={"stage": "request"})
                await send(started)
                await send({**message, "body": body})
                return
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if task_id:
                self._settle(store, task_id)

    @staticmethod
    def _settle(store: TaskStore, task_id: str) -> None:
        """The task's run is over: if nothing finished it, say why (refused before it ran, or a bug)."""
        try:
            entry = store.get(task_id)
        except NotFoundError:
            return
        if entry.state is TaskState.PENDING:  # the function never ran: BentoML refused its input
            store.fail(task_id, InvalidInputError("the task's input was refused before it ran; send it to the "
                                                  "plain route to see why", field="body"))
        elif entry.state is TaskState.IN_PROGRESS:
            store.fail(task_id, InternalError("the task stopped without an answer; see the server log"))


# ---------------------------------------------------------------- BentoML's own task rows
def _result_db() -> str:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return BentoMLContainer.result_store_file.get()


def prepare_result_db() -> None:
    """Create BentoML's task table if missing: ``bentoml serve`` does, an app made by ``to_asgi()`` does not."""
    from _bentoml_impl.tasks import Sqlite3Store

    path = _result_db()
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Sqlite3Store.init_db(path)


def forget_bentoml_rows(task_ids: list[str]) -> None:
    """Delete the rows BentoML keeps for tasks this service dropped (each holds its submitted upload)."""
    path = _result_db()

    def run() -> None:
        try:
            with closing(sqlite3.connect(path, timeout=30)) as conn:
                conn.executemany("DELETE FROM result WHERE task_id = ?", [(i,) for i in task_ids])
                conn.commit()
        except sqlite3.Error as exc:
            log.warning("could not delete %d dropped task(s) from %s: %s", len(task_ids), path, exc)

    threading.Thread(target=run, name="editx-task-forget", daemon=True).start()
