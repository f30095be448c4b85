"""API keys: anonymous requests get 401 on every protected route, the key opens them, the probes stay open.

One in-process service with two keys (one from EDITX_API_KEYS, one from EDITX_API_KEYS_FILE).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.service_helpers import in_process_service, service_env, tone, wav_bytes

KEY = "k-env-0123456789"
FILE_KEY = "k-file-abcdef"
PROTECTED = [
    ("GET", "/status"), ("GET", "/vocabulary"), ("GET", "/logs"), ("POST", "/cache/clear"),
    ("POST", "/clone"), ("POST", "/edit"), ("POST", "/transcribe"), ("POST", "/dialogue"), ("GET", "/docs.json"),
    ("GET", "/"),
    ("GET", "/ui/"), ("POST", "/ui/gradio_api/upload"), ("GET", "/ui/gradio_api/file=/etc/hostname"),
    ("GET", "/v1/models"), ("POST", "/v1/audio/speech"), ("GET", "/metrics"),
]


@pytest.fixture(scope="module")
def client(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    keyfile = tmp_path_factory.mktemp("keys") / "keys.txt"
    keyfile.write_text(f"# one key per line\n{FILE_KEY}  # the CI key\n\n")
    env = {**service_env(tiny_root), "EDITX_API_KEYS": f"{KEY}, ", "EDITX_API_KEYS_FILE": str(keyfile)}
    with in_process_service(env) as (c, _module):
        yield c


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_anonymous_requests_are_refused(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    body = r.json()
    if path.startswith("/v1"):
        assert body["error"]["type"] == "authentication_error" and body["error"]["code"] == "invalid_api_key"
    else:
        assert "API key" in body["error"] and body["field"] == "authorization"


@pytest.mark.parametrize("header", ["Bearer wrong-key", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer "])
def test_wrong_credentials_are_refused(client: TestClient, header: str) -> None:
    assert client.get("/status", headers={"Authorization": header}).status_code == 401


def test_probes_stay_open(client: TestClient) -> None:
    for path in ("/livez", "/healthz"):
        assert client.get(path).status_code == 200, path
    assert client.get("/readyz").status_code in (200, 503)  # open: loading or loaded, never 401


@pytest.mark.parametrize("key", [KEY, FILE_KEY])
def test_the_key_opens_every_route(client: TestClient, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    status = client.get("/status", headers=auth)
    assert status.status_code == 200 and status.json()["auth"] == "on"
    for path in ("/vocabulary", "/logs", "/docs.json", "/ui/"):
        assert client.get(path, headers=auth).status_code == 200, path
    assert client.post("/cache/clear", headers=auth).status_code == 200
    up = client.post("/ui/gradio_api/upload", headers=auth, files={"files": ("a.wav", wav_bytes(tone(0.5)))})
    assert up.status_code == 200, up.text
    # Past authentication, the API judges the request itself.
    r = client.post("/transcribe", headers=auth, files={"audio": ("x.wav", b"not audio" * 50)})
    assert r.status_code in (400, 503) and r.json()["field"] in ("audio", None)


def test_login_flow(client: TestClient) -> None:
    page = client.get("/ui/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and '<form method="post" action="/login">' in page.text
    bad = client.post("/login", data={"key": "nope", "next": "/ui/"}, follow_redirects=False)
    assert bad.status_code == 401 and "not valid" in bad.text and "set-cookie" not in bad.headers
    ok = client.post("/login", data={"key": KEY, "next": "//evil.example/"}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/ui/"  # no open redirect
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and KEY not in cookie
    session = cookie.split(";")[0].split("=", 1)[1]
    jar = {"editx_session": session}
    try:
        client.cookies.update(jar)
        assert client.get("/ui/").status_code == 200
        up = client.post("/ui/gradio_api/upload", files={"files": ("a.wav", wav_bytes(tone(0.5)))})
        assert up.status_code == 200, up.text
        assert client.get("/status").json()["auth"] == "on"
    finally:
        client.cookies.clear()
    assert client.get("/ui/").status_code == 401
    client.cookies.update({"editx_session": session[:-1] + "0"})
    try:
        assert client.get("/status").status_code == 401
    finally:
        client.cookies.clear()
