"""GET /docs.json documents the refusals every operation can answer (400/401/404/408/409/413/415/429/503).

BentoML writes the spec of its audio APIs itself (with its own 400/404/500 shapes, which this service
never answers) and FastAPI documents a 422 that the native routes answer as a 400. This middleware
rewrites the served spec: the one error shape (``ErrorBody``; OpenAI's under /v1),
the statuses each operation can really answer (from the body guard's table of routes and ``api.errors``'
table), the bearer security scheme, and the answers of the tasks' routes (BentoML documents a status
shape its own answers do not have, and gives cancel the operationId of retry; see ``api.native.tasks``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from api.captions import CaptionedAudio
from api.errors import BUSY_RETRY_AFTER_S, LOADING_RETRY_AFTER_S, ErrorBody, OpenAIErrorBody
from api.forms import BodySpec
from api.settings import PROBE_PATHS, HttpSettings
from api.uploads import ASGIApp, Message, Receive, Scope, Send

SPEC_PATH = "/docs.json"
_REASONS = {
    400: "bad input (a malformed body included): the message says what is wrong, `field` (`param`) names the field",
    401: "no valid API key (only when EDITX_API_KEYS / EDITX_API_KEYS_FILE is set)",
    404: "what the request names does not exist (a voice, a model)",
    408: "the request body did not arrive within EDITX_UPLOAD_TIMEOUT_S, or sent nothing for EDITX_UPLOAD_IDLE_S",
    409: "the name is taken; or the task is not there yet (not completed, cancelled, already finished)",
    413: "over a size limit (upload, audio length, text length, token budget)",
    415: "not the body type the operation takes (multipart/form-data or application/json)",
    429: f"busy (EDITX_MAX_REQUESTS, EDITX_MAX_UPLOADS); Retry-After: {BUSY_RETRY_AFTER_S}",
    503: f"the model is loading or failed to load (Retry-After: {LOADING_RETRY_AFTER_S}), its queue is full "
         f"(Retry-After: {BUSY_RETRY_AFTER_S}), or a storage folder cannot be written",
}
_WORK_METHODS = ("post", "put", "patch", "delete")
CAPTIONED_PATHS = ("/clone", "/dialogue")  # BentoML APIs that answer JSON or events when asked for captions


def _statuses(path: str, method: str, op: dict[str, Any], body_routes: Mapping[str, BodySpec],
              task_paths: frozenset[str] = frozenset()) -> list[int]:
    if path in PROBE_PATHS:
        return []
    out = [401]
    if method in _WORK_METHODS or op.get("parameters"):
        out.append(400)
    if method in _WORK_METHODS and path not in ("/cache/clear",):
        out += [408, 413, 429]
    if path in body_routes:
        out += [415, 503]
    elif path.startswith("/v1/") and method in _WORK_METHODS:
        out.append(503)
    if path in ("/v1/audio/speech", "/clone", "/tasks/clone") or "{" in path:
        out.append(404)  # an unknown voice (or model)
    action = path.rpartition("/")[2]
    if path in task_paths and action != "submit":
        out += [404, 409]  # an unknown or expired task id; a task not in a state for this
        if action == "get":
            out += [413, 503]  # a failed task's own error (a refusal found once it ran)
    if path == "/v1/audio/voices" and method == "post":
        out.append(409)
    return sorted(set(out))


def _task_answers(spec: dict[str, Any], task_routes: Mapping[str, str]) -> frozenset[str]:
    """Document what the tasks' routes answer (api.native.tasks); returns their paths."""
    from api.native.tasks import TaskCaptions, TaskStatus, TaskSubmitted

    schemas = spec["components"]["schemas"]
    for model in (TaskSubmitted, TaskStatus, TaskCaptions):
        schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schemas[model.__name__].pop("$defs", {}).items():
            schemas.setdefault(name, sub)

    def answer(model: type) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}

    paths = spec.get("paths", {})
    out: set[str] = set()
    for route, name in task_routes.items():
        for action, method, model in (("submit", "post", TaskSubmitted), ("retry", "post", TaskSubmitted),
                                      ("status", "get", TaskStatus), ("cancel", "put", TaskStatus)):
            op = paths.get(f"{route}/{action}", {}).get(method)
            if op is None:
                continue
            out.add(f"{route}/{action}")
            op["responses"]["200"] = {"description": f"the task's {'id' if model is TaskSubmitted else 'state'}",
                                      "content": answer(model)}
            if action == "cancel":
                op["operationId"] = op["operationId"].removesuffix("_retry") + "_cancel"
                op["x-bentoml-name"] = f"{name}_cancel"
                op["description"] = f"Cancel a pending or running task of {name}: its requests stop within one step"
            if action == "status":
                op["description"] = f"State and progress (stage, fraction 0..1) of a task of {name}"
        op = paths.get(f"{route}/get", {}).get("get")
        if op is not None:
            out.add(f"{route}/get")
            op["description"] = (f"The audio of a completed task of {name} (in the response_format it was "
                                 "submitted with); with captions=true, where each spoken piece sits in it")
            op.setdefault("parameters", []).append({
                "name": "captions", "in": "query", "required": False,
                "schema": {"type": "boolean", "default": False, "title": "Captions"}})
            op["responses"].setdefault("200", {}).setdefault("content", {}).update(answer(TaskCaptions))
    return frozenset(out)


def augment(spec: dict[str, Any], body_routes: Mapping[str, BodySpec], auth: bool,
            task_routes: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The spec with the refusals documented in the service's error shapes."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ErrorBody.model_json_schema()
    openai_schema = OpenAIErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in openai_schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas["OpenAIErrorBody"] = openai_schema
    captioned = CaptionedAudio.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in captioned.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas["CaptionedAudio"] = captioned
    spec["components"].setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "description": "an API key from EDITX_API_KEYS / EDITX_API_KEYS_FILE"}
    task_paths = _task_answers(spec, task_routes or {})
    for path, ops in spec.get("paths", {}).items():
        shape = "OpenAIErrorBody" if path.startswith("/v1/") else "ErrorBody"
        for method, op in ops.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            responses.pop("422", None)  # FastAPI's default; answered as 400 here
            responses.pop("404", None)  # BentoML's default for its APIs; documented below where answered
            if path in CAPTIONED_PATHS and "200" in responses:  # with `captions`: JSON whole, events streamed
                content = responses["200"].setdefault("content", {})
                content["application/json"] = {"schema": {"$ref": "#/components/schemas/CaptionedAudio"}}
                content["text/event-stream"] = {"schema": {"type": "string"}}
            for status in _statuses(path, method, op, body_routes, task_paths):
                responses[str(status)] = {
                    "description": _REASONS[status],
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{shape}"}}},
                }
            if path == "/readyz":
                responses.setdefault("503", {"description": "not ready: loading, or the load failed"})
            if auth and path not in PROBE_PATHS:
                op["security"] = [{"bearer": []}]
    return spec


class OpenAPIMiddleware:
    """Rewrites the body of GET /docs.json with :func:`augment`."""

    def __init__(self, app: ASGIApp, body_routes: Callable[[], Mapping[str, BodySpec]],
                 settings: Callable[[], HttpSettings],
                 task_routes: Callable[[], Mapping[str, str]] | None = None) -> None:
        self.app = app
        self._routes = body_routes
        self._settings = settings
        self._task_routes = task_routes or dict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SPEC_PATH or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        assert start is not None
        body = b"".join(chunks)
        if start["status"] == 200:
            try:
                spec = augment(json.loads(body), self._routes(), bool(self._settings().keys()), self._task_routes())
                body = json.dumps(spec).encode()
            except ValueError:
                pass
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})
