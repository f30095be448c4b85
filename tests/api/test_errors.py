"""The one error table: what each error answers (status, Retry-After, body) on the native routes and under /v1.

Fast: a bare FastAPI app with the table's handlers and the /v1 route class, no model.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import fastapi
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api.admission import AdmissionMiddleware
from api.errors import (
    BUSY_RETRY_AFTER_S,
    ERROR_TABLE,
    LOADING_RETRY_AFTER_S,
    Busy,
    field_names,
    install_error_handlers,
    rename_fields,
    rule_for,
)
from api.openai.errors import OpenAIRoute
from api.settings import HttpSettings
from runners import errors as engine_errors
from runners.errors import (
    ConflictError,
    EngineUnavailableError,
    InputTooLargeError,
    InvalidInputError,
    NotFoundError,
    QueueFullError,
    StorageUnavailableError,
)

CASES: list[tuple[Exception, int, str | None]] = [
    (InvalidInputError("target_text is empty", field="target_text"), 400, None),
    (InputTooLargeError("target_text has 10001 characters; the limit is 10000", field="target_text"), 413, None),
    (NotFoundError("voice 'x' does not exist", field="voice"), 404, None),
    (ConflictError("name 'x' is taken", field="name"), 409, None),
    (EngineUnavailableError("the model is still loading"), 503, str(LOADING_RETRY_AFTER_S)),
    (QueueFullError("the queue is full (EDITX_MAX_QUEUE)"), 503, str(BUSY_RETRY_AFTER_S)),
    (StorageUnavailableError("EDITX_VOICES_DIR cannot be written"), 503, None),
]


def test_the_engine_knows_nothing_of_http() -> None:
    for name in dir(engine_errors):
        kind = getattr(engine_errors, name)
        if isinstance(kind, type) and issubclass(kind, Exception):
            assert not hasattr(kind, "status_code") and not hasattr(kind, "retry_after_s"), name


def test_every_engine_error_has_a_rule() -> None:
    for kind in (InvalidInputError, InputTooLargeError, NotFoundError, ConflictError, EngineUnavailableError,
                 QueueFullError, StorageUnavailableError, engine_errors.RequestAbortedError):
        assert kind in ERROR_TABLE, kind
    assert rule_for(RuntimeError("a bug")) is None
    # Retry-After: one value when busy, one when loading, none where waiting changes nothing.
    assert {r.retry_after_s for r in ERROR_TABLE.values()} == {None, BUSY_RETRY_AFTER_S, LOADING_RETRY_AFTER_S}
    assert rule_for(Busy("x")).retry_after_s == rule_for(QueueFullError("x")).retry_after_s == BUSY_RETRY_AFTER_S


class Speech(BaseModel):
    input: str


def _app(raised: Exception) -> fastapi.FastAPI:
    app = fastapi.FastAPI()
    install_error_handlers(app)
    native = fastapi.APIRouter()
    v1 = fastapi.APIRouter(route_class=OpenAIRoute)

    @native.post("/native")
    def native_route() -> None:
        raise raised

    @v1.post("/v1/speech", dependencies=[field_names(target_text="input", prompt_audio="voice")])
    def v1_route(request: Speech) -> None:
        raise raised

    @v1.post("/v1/plain")
    def v1_plain() -> None:
        raise raised

    app.include_router(native)
    app.include_router(v1)
    return app


@pytest.mark.parametrize(("exc", "status", "retry"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_one_table_two_shapes(exc: Exception, status: int, retry: str | None) -> None:
    client = TestClient(_app(exc))
    native = client.post("/native")
    assert native.status_code == status and native.headers.get("retry-after") == retry
    assert native.json() == {"error": str(exc), "field": getattr(exc, "field", None)}
    plain = client.post("/v1/plain")
    assert plain.status_code == status and plain.headers.get("retry-after") == retry
    err = plain.json()["error"]
    assert err["message"] == str(exc) and err["param"] == getattr(exc, "field", None)
    assert err["type"] == rule_for(exc).openai_type and err["code"] == rule_for(exc).code


def test_a_route_names_fields_as_its_request_does() -> None:
    exc = InputTooLargeError("target_text has 10001 characters; the limit is 10000", field="target_text")
    r = TestClient(_app(exc)).post("/v1/speech", json={"input": "x"})
    assert r.status_code == 413
    assert r.json()["error"]["param"] == "input"
    assert r.json()["error"]["message"] == "input has 10001 characters; the limit is 10000"
    missing = TestClient(_app(exc)).post("/v1/speech", json={})  # FastAPI's own validation, same table
    assert missing.status_code == 400 and missing.json()["error"] == {
        "message": "input is required", "type": "invalid_request_error", "param": "input", "code": "invalid_value"}


def test_renaming_touches_whole_field_names_only() -> None:
    aliases = {"target_text": "input", "prompt_audio": "voice"}
    assert rename_fields("paralinguistic_target_text and target_text.", "target_text", aliases) == (
        "paralinguistic_target_text and input.", "input")
    assert rename_fields("give prompt_audio", None, aliases) == ("give voice", None)
    assert rename_fields("unchanged", "other", aliases) == ("unchanged", "other")


def test_a_bug_is_a_500_without_details() -> None:
    client = TestClient(_app(RuntimeError("secret internals")), raise_server_exceptions=False)
    r = client.post("/v1/plain")
    assert r.status_code == 500 and "secret" not in r.text and r.json()["error"]["type"] == "server_error"


def test_admission_answers_busy_through_the_table() -> None:
    async def scenario() -> tuple[int, dict[str, str], dict[str, Any]]:
        release = asyncio.Event()

        async def slow(scope: Any, receive: Any, send: Any) -> None:
            await release.wait()

        guard = AdmissionMiddleware(slow, settings=lambda: HttpSettings(max_requests=1))
        holder = asyncio.create_task(guard({"type": "http", "method": "POST", "path": "/clone"}, None, None))
        await asyncio.sleep(0.01)
        out: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            out.append(message)

        await guard({"type": "http", "method": "POST", "path": "/v1/audio/speech"}, None, send)
        release.set()
        await holder
        headers = {k.decode(): v.decode() for k, v in out[0]["headers"]}
        return out[0]["status"], headers, json.loads(out[1]["body"])

    status, headers, body = asyncio.run(scenario())
    assert status == 429 and headers["retry-after"] == str(BUSY_RETRY_AFTER_S)
    assert body["error"]["type"] == "rate_limit_error" and body["error"]["code"] == "rate_limit_exceeded"
