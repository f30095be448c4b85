"""Malformed bodies on every route that takes one, in-process: a 4xx in the route's own error shape, never a 5xx.

Native routes (/clone, /edit, /transcribe) answer ``{error, field}``; the /v1 routes answer OpenAI's
``{error: {message, type, param, code}}``. Each case below answered a 500 on some route before the one body
guard (api.forms) covered them all. Unknown paths and wrong methods under /v1 answer in OpenAI's shape too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.service_helpers import in_process_service, service_env, tone, wav_bytes

NATIVE = ("/clone", "/edit", "/transcribe")
V1_MULTIPART = ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/voices")
V1_JSON = ("/v1/audio/speech",)
NATIVE_JSON = ("/dialogue",)
FILE_FIELD = {"/clone": "prompt_audio", "/edit": "audio", "/transcribe": "audio",
              "/v1/audio/transcriptions": "file", "/v1/audio/translations": "file", "/v1/audio/voices": "audio"}


@pytest.fixture(scope="module")
def client(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    env = {**service_env(tiny_root), "EDITX_LAZY_LOAD": "1",  # nothing here needs the model loaded
           "EDITX_VOICES_DIR": str(tmp_path_factory.mktemp("voices"))}
    with in_process_service(env) as (c, _module):
        yield c


@pytest.fixture(scope="module")
def wav() -> bytes:
    return wav_bytes(tone(0.5))


def _form(parts: list[bytes], boundary: str = "b0undary") -> bytes:
    return b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()


def _file(name: str, data: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"; filename="a.wav"\r\n\r\n'.encode() + data


def _text(name: str, value: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value


MP = "multipart/form-data; boundary=b0undary"


def _multipart_cases(path: str, wav: bytes) -> list[tuple[str, str, bytes]]:
    good_file = _file(FILE_FIELD[path], wav)
    return [
        ("multipart without a boundary", "multipart/form-data", _form([good_file, _text("name", b"x")])),
        ("a part without headers", MP, b"--b0undary\r\n\r\nhello\r\n--b0undary--\r\n"),
        ("garbage after the boundary", MP, b"--b0undary\r\n\x00\xff\xfe garbage"),
        ("no closing boundary", MP, b"--b0undary\r\n" + _text("name", b"x")),
        ("random bytes", MP, bytes(range(256)) * 8),
        ("empty body", MP, b""),
        ("boundary with no parts", "multipart/form-data; boundary=", b"----\r\n"),
        ("2000 fields", MP, _form([_text(f"f{i}", b"x") for i in range(2000)])),
        ("a text field of 2 MiB", MP, _form([good_file, _text("text", b"a" * (2 * 1024 * 1024))])),
        ("only a field with a quote in its name", MP, _form([b'Content-Disposition: form-data; name="a\\"b"\r\n\r\nx'])),
        ("a text field nested 60000 deep", MP, _form([good_file, _text("language", b"[" * 60_000),
                                                     _text("seed", b"[" * 60_000)])),
        ("the file sent as text", MP, _form([_text(FILE_FIELD[path], b"http://127.0.0.1:9/x.wav")])),
        ("a JSON body", "application/json", b'{"name": "x"}'),
        ("urlencoded", "application/x-www-form-urlencoded", b"name=x&file=http://127.0.0.1:9/x.wav"),
    ]


JSON_CASES: list[tuple[str, str, bytes]] = [
    ("not UTF-8", "application/json", b'{"model": "tts-1", "input": "\xff\xfe\xfa", "voice": "a"}'),
    ("Latin-1 text", "application/json", '{"model": "tts-1", "input": "café", "voice": "a"}'.encode("latin-1")),
    ("invalid JSON", "application/json", b'{"model": "tts-1", "input": '),
    ("a JSON list", "application/json", b'["tts-1", "hello", "a"]'),
    ("a JSON string", "application/json", b'"hello"'),
    ("JSON null", "application/json", b"null"),
    ("nested 100000 deep", "application/json", b"[" * 100_000 + b"]" * 100_000),
    ("an object nested 100000 deep", "application/json",
     b'{"model": "tts-1", "input": "hi", "voice": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("empty body", "application/json", b""),
    ("NaN and a lone surrogate", "application/json", b'{"model": "tts-1", "input": "\\ud800", "voice": "a", "speed": NaN}'),
    ("multipart", MP, b"--b0undary\r\n\r\nhello\r\n--b0undary--\r\n"),
    ("plain text", "text/plain", b"hello"),
]


def _shape_ok(path: str, body: dict) -> bool:
    if path.startswith("/v1/"):
        err = body.get("error")
        return isinstance(err, dict) and set(err) == {"message", "type", "param", "code"} and bool(err["message"])
    return set(body) == {"error", "field"} and bool(body["error"])


def _check(client: TestClient, path: str, ctype: str, body: bytes, case: str) -> None:
    r = client.post(path, content=body, headers={"content-type": ctype})
    assert 400 <= r.status_code < 500, f"{path} {case}: {r.status_code} {r.text[:300]}"
    assert r.headers["content-type"].startswith("application/json"), f"{path} {case}: {r.headers}"
    assert _shape_ok(path, r.json()), f"{path} {case}: {r.text[:300]}"


@pytest.mark.parametrize("path", NATIVE + V1_MULTIPART)
def test_malformed_multipart_is_a_4xx_in_the_route_shape(client: TestClient, wav: bytes, path: str) -> None:
    for case, ctype, body in _multipart_cases(path, wav):
        _check(client, path, ctype, body, case)


@pytest.mark.parametrize("path", V1_JSON + NATIVE_JSON)
def test_malformed_json_is_a_4xx_in_the_route_shape(client: TestClient, path: str) -> None:
    for case, ctype, body in JSON_CASES:
        _check(client, path, ctype, body, case)


def test_the_refusals_name_the_problem(client: TestClient, wav: bytes) -> None:
    r = client.post("/v1/audio/speech", content=b'{"input": "\xff"}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]["message"], r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = client.post("/v1/audio/speech", content=b"[1]", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "object" in r.json()["error"]["message"], r.text
    r = client.post("/v1/audio/transcriptions", content=b"x", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"], r.text
    r = client.post("/v1/audio/voices", content=_form([_text("audio", b"http://x/y.wav"), _text("name", b"v")]),
                    headers={"content-type": MP})
    assert r.status_code == 400 and r.json()["error"]["param"] == "audio", r.text
    r = client.post("/v1/audio/transcriptions", content=b'{"file": "x"}', headers={"content-type": "application/json"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "invalid_request_error", r.text


def test_a_well_formed_body_still_reaches_the_route(client: TestClient, wav: bytes) -> None:
    """The guard re-encodes what it checked: repeated fields (timestamp_granularities[]) survive."""
    r = client.post("/v1/audio/voices", files={"audio": ("a.wav", b"not audio")}, data={"name": "v1"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "audio", r.text  # reached the route
    r = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "hi", "voice": "nobody"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "voice", r.text
    r = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav)},
                    data={"timestamp_granularities[]": ["word", "never"], "response_format": "verbose_json"})
    assert r.status_code == 400 and "never" in r.json()["error"]["message"], r.text


def test_refusals_are_logged_at_info(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/audio/speech", content=b'{"input": "\xff"}', headers={"content-type": "application/json"})
        client.post("/v1/audio/voices", content=b"x", headers={"content-type": "multipart/form-data"})
    refused = [r for r in caplog.records if r.getMessage().startswith("refused with 4")]
    assert len(refused) >= 2 and all(r.levelno == logging.INFO and r.exc_info is None for r in refused), refused
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


def test_unknown_v1_paths_and_methods_answer_in_openai_shape(client: TestClient) -> None:
    r = client.get("/v1/no/such/thing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error", r.text
    assert r.json()["error"]["code"] == "not_found"
    r = client.post("/v1/audio/nothing", json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error", r.text
    r = client.put("/v1/audio/speech", content=b"{}")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error", r.text
    assert "POST" in r.headers.get("allow", "")
    r = client.get("/v1/audio/speech")
    assert r.status_code == 405 and set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
    # Native unknown paths keep the native shape.
    r = client.get("/no-such-page")
    assert r.status_code == 404 and set(r.json()) == {"error", "field"}, r.text


def test_fields_are_named_as_the_client_sent_them(client: TestClient, tiny_root: Path) -> None:
    """Under /v1, an engine refusal about target_text names ``input`` in param and in the message."""
    r = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "a" * 10_001, "voice": "nobody"})
    assert r.status_code in (404, 413), r.text  # the voice is looked up first or the text is measured first
    err = r.json()["error"]
    assert err["param"] in ("input", "voice") and "target_text" not in err["message"], err
    r = client.post("/v1/audio/speech", json={"model": "tts-1", "input": "hello"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "voice", r.text
    assert "voice" in r.json()["error"]["message"]


def test_json_error_bodies_are_json_for_every_route(client: TestClient) -> None:
    """Sanity: a refusal's body parses as JSON (never Starlette's plain-text answers)."""
    for path in NATIVE + V1_MULTIPART + V1_JSON + NATIVE_JSON:
        r = client.post(path, content=b"\x00", headers={"content-type": "application/octet-stream"})
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        json.loads(r.text)
