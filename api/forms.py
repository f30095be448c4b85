"""The one body guard: every route that takes a body has it checked before any framework parses it.

BentoML answers several malformed requests with a 500 (a multipart body without a boundary, a part
without headers, a filename over 255 bytes, a 2 MiB text field, thousands of fields, a urlencoded or
JSON body), logs every 400 at ERROR with a traceback, and takes a file field sent as text for a URL
it then downloads; FastAPI answers a 500 to a JSON body that is not UTF-8 or to a broken multipart form.
This middleware reads the body of every route in its table (:class:`BodySpec`: the BentoML audio APIs
and the FastAPI routes, found from their declarations) and answers every problem with a 4xx through
``api.errors``' table, in the route's error shape, logged at INFO:

* multipart routes: parsed here with tight limits, then handed on re-encoded (files with a short plain
  filename, only the fields the route declares), so what the framework parses is exactly what was
  checked. A BentoML API's text fields are validated against its input model and passed as JSON values.
* JSON routes: UTF-8, valid JSON (not nested too deeply, no lone surrogates), a JSON object, at most
  :data:`MAX_JSON_BYTES`; the body is handed on unchanged. A BentoML API that takes no file (``/dialogue``)
  takes JSON, and its body is also validated against its input model here, so its refusals name the
  field as the request writes it (``turns[2].pause_after_ms``) in the native error shape.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from fastapi import FastAPI, params
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from api.errors import BodyTooLarge, MalformedBody, UnsupportedMediaType, send_error
from api.uploads import ASGIApp, Message, Receive, Scope, Send
from runners.errors import InvalidInputError

log = logging.getLogger("editx.api")

MAX_FIELDS = 32
MAX_FILES = 4
MAX_TEXT_PART_BYTES = 64 * 1024  # the longest text limit (EDITX_MAX_TEXT_CHARS) is far below this
MAX_FILENAME_BYTES = 255
MAX_JSON_BYTES = 1024 * 1024  # a speech request's text is at most EDITX_MAX_TEXT_CHARS (10,000) characters
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class BodySpec:
    """What one route takes as its body, for the guard."""

    kind: Literal["multipart", "json"]
    fields: frozenset[str] = frozenset()  # multipart: the fields the route reads (others are dropped)
    file_fields: frozenset[str] = frozenset()  # multipart: the fields that must be file parts
    model: type[BaseModel] | None = None  # a BentoML API's input model: text fields checked, sent as JSON
    repeats: frozenset[str] = field(default_factory=frozenset)  # fields that may come more than once (lists)


def bentoml_body_specs(apis: Iterable[Any]) -> dict[str, BodySpec]:
    """The BentoML APIs' routes (``api.route``, ``api.input_spec``) as bodies checked against their model.

    An API with a file field takes multipart forms; one without takes a JSON object. A task
    (``@bentoml.task``) also takes that body at ``route/submit``.
    """
    out: dict[str, BodySpec] = {}
    for api in apis:
        model = api.input_spec
        if not model.multipart_fields:
            out[api.route] = BodySpec("json", frozenset(model.model_fields), model=model)
        else:
            out[api.route] = BodySpec("multipart", frozenset(model.model_fields),
                                      frozenset(model.multipart_fields), model)
        if getattr(api, "is_task", False):  # a task's submit route takes the same body (api.native.tasks)
            out[f"{api.route}/submit"] = out[api.route]
    return out


def _api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """Every APIRoute of ``app`` with its full path (FastAPI 0.16x keeps included routers as one entry each)."""
    from fastapi import routing

    if hasattr(routing, "iter_route_contexts"):
        for ctx in routing.iter_route_contexts(app.routes):
            if isinstance(ctx.original_route, APIRoute) and ctx.path:
                yield ctx.path, ctx.original_route
        return
    for route in app.routes:
        if isinstance(route, APIRoute):
            yield route.path, route


def fastapi_body_specs(app: FastAPI) -> dict[str, BodySpec]:
    """Every FastAPI route of ``app`` that takes a body: multipart when it declares Form/File fields, else JSON.

    Routes with path parameters are not in the table (none of them takes a body).
    """
    out: dict[str, BodySpec] = {}
    for path, route in _api_routes(app):
        if not route.dependant.body_params or "{" in path or not (route.methods or set()) & BODY_METHODS:
            continue
        body = route.dependant.body_params
        forms = [p for p in body if isinstance(p.field_info, params.Form)]
        if not forms:
            out[path] = BodySpec("json")
            continue
        out[path] = BodySpec(
            "multipart",
            frozenset(p.alias for p in body),
            frozenset(p.alias for p in body if isinstance(p.field_info, params.File)),
            repeats=frozenset(p.alias for p in body if _is_list(p.field_info.annotation)),
        )
    return out


def _is_list(annotation: Any) -> bool:
    """Whether a form field takes several values (``list[str] | None``): its repeated parts are all kept."""
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return origin in (Union, UnionType) and any(_is_list(arg) for arg in get_args(annotation))


def _first_error(exc: ValidationError) -> tuple[str, str | None]:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or None
    return f"{field or 'form'}: {err.get('msg', 'invalid value')}", field


def _text_value(raw: str, annotation: Any) -> Any:
    """What BentoML would make of a text part (JSON when it parses), but a str field keeps its text."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to be a value: it is text
        return raw
    if annotation is str and not isinstance(value, str):
        return raw  # target_text=123 is the text "123", not a type error
    return value


async def _read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The whole body (capped and given a deadline by the upload middleware); None if the client left.

    Over ``limit`` bytes: BodyTooLarge (the rest is not read).
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise BodyTooLarge(f"the JSON body is over {limit} bytes", "body")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _parse(scope: Scope, body: bytes) -> FormData:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request({**scope, "app": None}, replay)
    try:
        return await request._get_form(max_files=MAX_FILES, max_fields=MAX_FIELDS,
                                       max_part_size=MAX_TEXT_PART_BYTES)
    except (MultiPartException, HTTPException) as exc:
        message = getattr(exc, "message", None) or getattr(exc, "detail", None) or str(exc)
        kind = BodyTooLarge if "maximum size" in message else MalformedBody
        raise kind(f"malformed multipart form: {message}", "body") from None
    except Exception as exc:  # python-multipart's own parse errors (a part without headers, …)
        raise MalformedBody(f"malformed multipart form ({type(exc).__name__}); send multipart/form-data "
                            "with one named part per field", "body") from None


def _encode(fields: list[tuple[str, str | UploadFile, bytes]]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    out = bytearray()
    for name, value, data in fields:
        out += f"--{boundary}\r\n".encode()
        if isinstance(value, UploadFile):
            ctype = (value.content_type or "application/octet-stream").replace("\r", "").replace("\n", "")
            out += (f'Content-Disposition: form-data; name="{name}"; filename="upload"\r\n'
                    f"Content-Type: {ctype}\r\n\r\n").encode()
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


async def clean_form(scope: Scope, body: bytes, spec: BodySpec) -> tuple[bytes, str]:
    """Check a multipart form against ``spec``; return it re-encoded (body, content type) or raise a refusal."""
    form = await _parse(scope, body)
    try:
        fields: list[tuple[str, str | UploadFile, bytes]] = []
        values: dict[str, Any] = {}
        seen: set[str] = set()
        for name, value in form.multi_items():
            if name not in spec.fields or (name in seen and name not in spec.repeats):
                continue  # unknown or repeated fields: ignored, as BentoML does
            seen.add(name)
            if name in spec.file_fields:
                if not isinstance(value, UploadFile):
                    raise InvalidInputError(f"{name} must be a file upload (a part with a filename), "
                                            "not a text value; URLs are not fetched", name)
                if len((value.filename or "").encode()) > MAX_FILENAME_BYTES:
                    raise InvalidInputError(f"{name}: the filename is longer than {MAX_FILENAME_BYTES} bytes", name)
                fields.append((name, value, await value.read()))
                continue
            raw = (await value.read()).decode("utf-8", "replace") if isinstance(value, UploadFile) else value
            if spec.model is None:  # a FastAPI route parses its text fields itself
                fields.append((name, raw, raw.encode("utf-8", "replace")))
                continue
            typed = _text_value(raw, spec.model.model_fields[name].annotation)
            values[name] = typed
            fields.append((name, raw, json.dumps(typed).encode()))
        if spec.model is not None:
            _validate(spec, values, seen)
        return _encode(fields)
    finally:
        await form.close()


def _validate(spec: BodySpec, values: dict[str, Any], seen: set[str]) -> None:
    """A BentoML API's fields against its input model (what BentoML would refuse with a logged traceback)."""
    assert spec.model is not None
    for name in sorted(spec.file_fields - seen):
        if spec.model.model_fields[name].is_required():
            raise InvalidInputError(f"{name} is missing: send it as a file part of the multipart form", name)
    try:
        spec.model.model_validate(values)
    except ValidationError as exc:
        errors = [e for e in exc.errors(include_url=False) if not e.get("loc") or e["loc"][0] not in spec.file_fields]
        if errors:
            message, field_name = _first_error(ValidationError.from_exception_data(exc.title, errors))  # type: ignore[arg-type]
            raise InvalidInputError(message, field_name) from None


def field_path(loc: Iterable[Any]) -> str:
    """A validation error's location as the request writes it: ``turns[2].pause_after_ms``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check_json_model(body: bytes, model: type[BaseModel]) -> None:
    """A JSON body against a BentoML API's input model: the first problem as a 400 naming its field."""
    try:
        model.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = field_path(err.get("loc", ()))
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        raise InvalidInputError(f"{where}: {message}" if where else message, where or None) from None


def check_json(body: bytes) -> None:
    """Refuse a JSON body that FastAPI would answer with a 500 or that could break the code after it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"the JSON body is not UTF-8 (byte {exc.start}); send UTF-8 JSON", "body") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise MalformedBody("the JSON body is nested too deeply", "body") from None
    except ValueError as exc:
        raise MalformedBody(f"the body is not valid JSON ({exc})", "body") from None
    if not isinstance(value, dict):
        kind = "null" if value is None else type(value).__name__
        raise MalformedBody(f"the body must be a JSON object (got {kind})", "body")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedBody("the JSON body has a lone surrogate escape (\\ud800-\\udfff); send valid Unicode",
                            "body") from None
    except (RecursionError, ValueError):
        raise MalformedBody("the JSON body is nested too deeply", "body") from None


def _drop_idle_request_dirs() -> None:
    """Remove BentoML's per-request temp folders once the request is over.

    BentoML empties a request's ``bentoml-request-*`` folder when the request ends but keeps the folder
    for reuse until the process exits; idle ones are removed here so a finished, failed or abandoned
    request leaves nothing in the temp folder. Runs on the event loop, as BentoML's own pool calls do.
    """
    from bentoml._internal.context import request_tempdir_pool

    request_tempdir_pool.cleanup()


def _media_type(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return ""


class FormGuardMiddleware:
    """For bodies sent to the routes in ``routes`` (path → :class:`BodySpec`): the checks above."""

    def __init__(self, app: ASGIApp, routes: Callable[[], Mapping[str, BodySpec]]) -> None:
        self.app = app
        self._routes = routes
        self._table: Mapping[str, BodySpec] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if self._table is None:
            self._table = self._routes()
        spec = self._table.get(scope["path"])
        if spec is None:
            await self.app(scope, receive, send)
            return
        try:
            headers, body = await self._check(scope, receive, spec)
        except Exception as exc:  # noqa: BLE001 - a refusal from the table; anything else is answered as a bug
            await send_error(send, scope["path"], exc, level=logging.INFO)
            return
        if body is None:
            # The client left (or the upload middleware cut the body off and replaces this answer with
            # its own). Answer anyway: a request that ends without a response is never counted as
            # finished by the layers outside, and holds the server's shutdown until their timeout.
            await send_error(send, scope["path"], MalformedBody("the request body ended before it was complete",
                                                                "body"), level=logging.INFO)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the disconnect, when it comes

        try:
            await self.app({**scope, "headers": headers}, replay, send)
        finally:
            if spec.model is not None:
                _drop_idle_request_dirs()

    async def _check(self, scope: Scope, receive: Receive, spec: BodySpec) -> tuple[list[Any], bytes | None]:
        """The headers and body to hand on; raises the refusal when the body is not what the route takes."""
        media = _media_type(scope)
        headers = list(scope.get("headers", []))
        if spec.kind == "json":
            if media and media != "application/json" and not media.endswith("+json"):
                raise UnsupportedMediaType(f"send application/json (got {media})", "body")
            body = await _read_body(receive, MAX_JSON_BYTES)
            if body is not None:
                check_json(body)
                if spec.model is not None:
                    check_json_model(body, spec.model)
            return headers, body
        if media != "multipart/form-data":
            raise UnsupportedMediaType(f"send multipart/form-data (got {media or 'none'}): the audio goes in a "
                                       "file part", "body")
        body = await _read_body(receive)
        if body is None:
            return headers, None
        clean, clean_type = await clean_form(scope, body, spec)
        headers = [(k, v) for k, v in headers if k not in (b"content-type", b"content-length", b"transfer-encoding")]
        headers += [(b"content-type", clean_type.encode()), (b"content-length", str(len(clean)).encode())]
        return headers, clean
