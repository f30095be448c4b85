"""The multipart forms of the BentoML audio APIs, checked before BentoML sees them.

BentoML answers several malformed requests with a 500 (a multipart body without a boundary, a part
without headers, a filename over 255 bytes, a 2 MiB text field, thousands of fields, a urlencoded or
JSON body), logs every 400 at ERROR with a traceback, and takes a file field sent as text for a URL
it then downloads. This middleware parses the form itself with tight limits, answers every problem
with a 4xx in the one error shape (logged at INFO), validates the text fields against the API's own
input model, and hands BentoML a clean re-encoded form: files with a short plain filename, text
fields as JSON values, so what BentoML parses is exactly what was checked.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from api.errors import send_error
from api.uploads import ASGIApp, Message, Receive, Scope, Send
from runners import privacy

log = logging.getLogger("editx.api")

MAX_FIELDS = 32
MAX_FILES = 4
MAX_TEXT_PART_BYTES = 64 * 1024  # the longest text limit (EDITX_MAX_TEXT_CHARS) is far below this
MAX_FILENAME_BYTES = 255


class FormRefused(Exception):
    def __init__(self, status: int, message: str, field: str | None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _first_error(exc: ValidationError) -> tuple[str, str | None]:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or None
    return f"{field or 'form'}: {err.get('msg', 'invalid value')}", field


def _text_value(raw: str, annotation: Any) -> Any:
    """What BentoML would make of a text part (JSON when it parses), but a str field keeps its text."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if annotation is str and not isinstance(value, str):
        return raw  # target_text=123 is the text "123", not a type error
    return value


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body (capped and given a deadline by the upload middleware); None if the client left."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
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
        status = 413 if "maximum size" in message else 400
        raise FormRefused(status, f"malformed multipart form: {message}", "body") from None
    except Exception as exc:  # python-multipart's own parse errors (a part without headers, …)
        raise FormRefused(400, f"malformed multipart form ({type(exc).__name__}); send multipart/form-data "
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


async def clean_form(scope: Scope, body: bytes, model: type[BaseModel], file_fields: frozenset[str]) -> tuple[bytes, str]:
    """Check a form against ``model``; return it re-encoded (body, content type) or raise FormRefused."""
    form = await _parse(scope, body)
    try:
        fields: list[tuple[str, str | UploadFile, bytes]] = []
        values: dict[str, Any] = {}
        seen: set[str] = set()
        for name, value in form.multi_items():
            if name not in model.model_fields or name in seen:
                continue  # unknown or repeated fields: ignored, as BentoML does
            seen.add(name)
            if name in file_fields:
                if not isinstance(value, UploadFile):
                    raise FormRefused(400, f"{name} must be a file upload (a part with a filename), "
                                           "not a text value; URLs are not fetched", name)
                if len((value.filename or "").encode()) > MAX_FILENAME_BYTES:
                    raise FormRefused(400, f"{name}: the filename is longer than {MAX_FILENAME_BYTES} bytes", name)
                fields.append((name, value, await value.read()))
                continue
            if isinstance(value, UploadFile):
                raw = (await value.read()).decode("utf-8", "replace")
            else:
                raw = value
            typed = _text_value(raw, model.model_fields[name].annotation)
            values[name] = typed
            fields.append((name, raw, json.dumps(typed).encode()))
        for name in sorted(file_fields - seen):
            if model.model_fields[name].is_required():
                raise FormRefused(400, f"{name} is missing: send it as a file part of the multipart form", name)
        try:
            model.model_validate(values)
        except ValidationError as exc:
            errors = [e for e in exc.errors(include_url=False) if not e.get("loc") or e["loc"][0] not in file_fields]
            if errors:
                message, field = _first_error(ValidationError.from_exception_data(exc.title, errors))  # type: ignore[arg-type]
                raise FormRefused(400, message, field) from None
        return _encode(fields)
    finally:
        await form.close()


def _drop_idle_request_dirs() -> None:
    """Remove BentoML's per-request temp folders once the request is over.

    BentoML empties a request's ``bentoml-request-*`` folder when the request ends but keeps the folder
    for reuse until the process exits; idle ones are removed here so a finished, failed or abandoned
    request leaves nothing in the temp folder. Runs on the event loop, as BentoML's own pool calls do.
    """
    from bentoml._internal.context import request_tempdir_pool

    request_tempdir_pool.cleanup()


class FormGuardMiddleware:
    """For POSTs to ``routes`` (path → input model, file fields): the checks above, then a clean form."""

    def __init__(self, app: ASGIApp, routes: Callable[[], dict[str, tuple[type[BaseModel], frozenset[str]]]]) -> None:
        self.app = app
        self._routes = routes
        self._table: dict[str, tuple[type[BaseModel], frozenset[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        if self._table is None:
            self._table = self._routes()
        route = self._table.get(scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        ctype = ""
        for name, value in scope.get("headers", []):
            if name == b"content-type":
                ctype = value.decode("latin-1")
        if ctype.split(";")[0].strip().lower() != "multipart/form-data":
            await self._refuse(send, path, 415, f"send multipart/form-data (got {ctype.split(';')[0] or 'none'}): "
                                                "the audio goes in a file part", "body")
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left (or the upload middleware cut the body off and answers itself)
        try:
            clean, clean_type = await clean_form(scope, body, *route)
        except FormRefused as exc:
            await self._refuse(send, path, exc.status, exc.message, exc.field)
            return
        del body
        headers = [(k, v) for k, v in scope.get("headers", []) if k not in (b"content-type", b"content-length",
                                                                           b"transfer-encoding")]
        headers += [(b"content-type", clean_type.encode()), (b"content-length", str(len(clean)).encode())]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": clean, "more_body": False}
            return await receive()  # the disconnect, when it comes

        try:
            await self.app({**scope, "headers": headers}, replay, send)
        finally:
            _drop_idle_request_dirs()

    async def _refuse(self, send: Send, path: str, status: int, message: str, field: str | None) -> None:
        log.info("refused with %d: %s", status, privacy.redact(message), extra={"stage": "request"})
        await send_error(send, path, status, message, field)
