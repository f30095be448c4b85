"""A real server under hostile and heavy input: no 5xx for any input, saturation that never blinds the
operator, bounded /metrics, nothing left in the temp folder.

One served instance (``bentoml.serve``) for the whole module, with its own temp folder (TMPDIR), a short
upload deadline, a short idle limit and room for 40 bodies at once.

The fuzzing seed changes with every run and is printed (and named in any failure); set EDITX_FUZZ_SEED to
replay a run.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import pytest

from tests.service_helpers import service_env, tone, wait_ready, wav_bytes

PROMPT_TEXT = "Please call Stella and ask her to bring these things."
UPLOAD_TIMEOUT_S = 6
UPLOAD_IDLE_S = 2.5  # above the 0.9 s between the bytes of _trickle below: a slow client is not an idle one
MAX_UPLOADS = 40
FUZZ_EXAMPLES = 100  # per operation and mode, without a body
FUZZ_BODY_EXAMPLES = 60  # per operation and mode, with a body
SHUTDOWN_S = 60


class Server:
    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp
        self.host, self.port = "127.0.0.1", int(url.rsplit(":", 1)[1])

    def temp_entries(self) -> set[str]:
        return {p.name for p in self.tmp.iterdir()}


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def private_port() -> int:
    """A free port below the kernel's ephemeral range, so no other server on this machine picks it meanwhile."""
    import random

    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@pytest.fixture(scope="module")
def server(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("server-tmp")
    # Its own BENTOML_HOME: every `bentoml serve` on the machine empties $BENTOML_HOME/prometheus_multiproc_dir
    # when it starts, which silently stops the metrics of any other server sharing it.
    env = {**service_env(tiny_root), "TMPDIR": str(tmp), "EDITX_UPLOAD_TIMEOUT_S": str(UPLOAD_TIMEOUT_S),
           "EDITX_UPLOAD_IDLE_S": str(UPLOAD_IDLE_S),
           "EDITX_MAX_UPLOADS": str(MAX_UPLOADS), "BENTOML_HOME": str(tmp_path_factory.mktemp("bentoml-home"))}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)  # the server's worker process inherits these
        from service import EditXService

        served = bentoml.serve(EditXService, port=private_port(), host="127.0.0.1")
        try:
            wait_ready(served.url, timeout=300)
            # The server answering is this one (not another test's on a reused port).
            assert httpx.get(served.url + "/status").json()["model_root"] == str(tiny_root)
            yield Server(served.url, tmp)
        finally:
            # A graceful shutdown must finish; if it hangs, fail visibly instead of hanging the suite.
            stopper = threading.Thread(target=served.stop, daemon=True)
            stopper.start()
            stopper.join(SHUTDOWN_S)
            if stopper.is_alive():
                for child in _children(os.getpid()):  # the server this fixture started, and its workers
                    subprocess.run(["pkill", "-KILL", "-P", str(child)], check=False)
                    subprocess.run(["kill", "-KILL", str(child)], check=False)
                pytest.fail(f"the server did not shut down within {SHUTDOWN_S} s after this module's load")


@pytest.fixture(scope="module")
def prompt_wav() -> bytes:
    return wav_bytes(tone(1.5))


def _form(fields: list[tuple[str, bytes, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for headers, _name, value in [(h, n, v) for n, h, v in fields]:
        out += f"--{boundary}\r\n".encode() + headers + b"\r\n\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def _part(name: str, value: bytes, filename: str | None = None) -> tuple[str, bytes, bytes]:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (name, disposition.encode(), value)


MP = {"content-type": "multipart/form-data; boundary=b0undary"}


def _bad_requests(wav: bytes) -> list[tuple[str, str, dict[str, str], bytes]]:
    target = _part("target_text", b"Good morning.")
    return [
        ("multipart without boundary", "/clone", {"content-type": "multipart/form-data"},
         _form([_part("prompt_audio", wav, "a.wav"), target])),
        ("part with no headers", "/clone", MP, b"--b0undary\r\n\r\nhello\r\n--b0undary--\r\n"),
        ("filename over 255 bytes", "/clone", MP, _form([_part("prompt_audio", wav, "a" * 300 + ".wav"), target])),
        ("2 MiB text field", "/clone", MP, _form([_part("prompt_audio", wav, "a.wav"),
                                                  _part("target_text", b"a" * (2 * 1024 * 1024 - 4096))])),
        ("2000 form fields", "/edit", MP, _form([_part(f"f{i}", b"x") for i in range(2000)])),
        ("urlencoded body", "/clone", {"content-type": "application/x-www-form-urlencoded"},
         b"target_text=hello&prompt_audio=http://127.0.0.1:9/x.wav"),
        ("JSON with a URL for the file", "/transcribe", {"content-type": "application/json"},
         json.dumps({"audio": "http://127.0.0.1:9/secret.wav"}).encode()),
        ("file field sent as text (a URL)", "/clone", MP,
         _form([_part("prompt_audio", b"http://127.0.0.1:9/secret.wav"), target])),
        ("file field missing", "/transcribe", MP, _form([_part("language", b"en")])),
        ("garbage body", "/edit", MP, os.urandom(4096)),
        ("seed not a number", "/clone", MP, _form([_part("prompt_audio", wav, "a.wav"), target,
                                                   _part("seed", b"lots")])),
        ("empty body", "/clone", MP, b""),
        # the /v1 routes go through the same body guard
        ("JSON that is not UTF-8", "/v1/audio/speech", {"content-type": "application/json"},
         b'{"model": "tts-1", "voice": "v", "input": "\xff\xfe"}'),
        ("JSON nested 100000 deep", "/v1/audio/speech", {"content-type": "application/json"},
         b"[" * 100_000 + b"]" * 100_000),
        ("a JSON list", "/v1/audio/speech", {"content-type": "application/json"}, b"[]"),
        ("multipart without boundary", "/v1/audio/transcriptions", {"content-type": "multipart/form-data"},
         _form([_part("file", wav, "a.wav")])),
        ("part with no headers", "/v1/audio/transcriptions", MP, b"--b0undary\r\n\r\nhello\r\n--b0undary--\r\n"),
        ("multipart without boundary", "/v1/audio/voices", {"content-type": "multipart/form-data"},
         _form([_part("audio", wav, "a.wav"), _part("name", b"v")])),
        ("part with no headers", "/v1/audio/voices", MP, b"--b0undary\r\n\r\nhello\r\n--b0undary--\r\n"),
    ]


def _error_shape_ok(path: str, err: dict) -> bool:
    if path.startswith("/v1/"):
        return set(err) == {"error"} and set(err["error"]) == {"message", "type", "param", "code"}
    return set(err) == {"error", "field"} and bool(err["error"])


def test_no_input_gets_a_5xx(server: Server, prompt_wav: bytes) -> None:
    before = server.temp_entries()
    for case, path, headers, body in _bad_requests(prompt_wav):
        r = httpx.post(server.url + path, content=body, headers=headers, timeout=60)
        assert 400 <= r.status_code < 500, f"{path} {case}: {r.status_code} {r.text[:300]}"
        assert _error_shape_ok(path, r.json()), f"{path} {case}: {r.text[:300]}"
    # No URL was fetched, and the service still serves a good request.
    ok = httpx.post(server.url + "/transcribe", files={"audio": ("a.wav", prompt_wav)}, timeout=120)
    assert ok.status_code == 200, ok.text
    # A text field that looks like a number is still text.
    r = httpx.post(server.url + "/clone", files={"prompt_audio": ("a.wav", prompt_wav)},
                   data={"prompt_text": PROMPT_TEXT, "target_text": "123", "seed": "1"}, timeout=300)
    assert r.status_code == 200, r.text
    # A request's folder goes in a background task right after its answer is sent: give it a moment.
    deadline = time.monotonic() + 5
    while not server.temp_entries() <= before | {"editx-ui"} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.temp_entries() <= before | {"editx-ui"}


def test_refusals_are_logged_at_info_without_traceback(server: Server, prompt_wav: bytes) -> None:
    since = time.time()
    r = httpx.post(server.url + "/clone", content=b"--x\r\n\r\n--x--", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400
    logs = httpx.get(server.url + "/logs", params={"since": since, "min_level": "DEBUG"}).json()
    refused = [rec for rec in logs if rec["message"].startswith("refused with 400")]
    assert refused and all(rec["level"] == "INFO" and rec["exception"] is None for rec in refused), logs
    assert not [rec for rec in logs if rec["level"] in ("ERROR", "CRITICAL")], logs


def test_schemathesis_finds_no_server_error(server: Server) -> None:
    """Every operation of /docs.json, with data that fits the spec and data that does not, and a seed that changes
    per run (printed); no 5xx, and every answer (status, content type, body) matches the spec."""
    import hypothesis
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    seed = int(os.environ.get("EDITX_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    print(f"schemathesis seed {seed} (replay with EDITX_FUZZ_SEED={seed})")
    schema = schemathesis.openapi.from_url(server.url + "/docs.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11
    seen: list[str] = []
    started = time.monotonic()
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    for op, mode in [(op, mode) for op in operations for mode in modes]:
        # Operations that take a body can reach the model (seconds each on this CPU); the rest are cheap.
        examples = FUZZ_BODY_EXAMPLES if op.method.lower() in ("post", "put", "patch") else FUZZ_EXAMPLES

        @hypothesis.seed(seed)
        @hypothesis.settings(max_examples=examples, deadline=None, database=None, print_blob=True,
                             suppress_health_check=list(hypothesis.HealthCheck),
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        @hypothesis.given(case=op.as_strategy(generation_mode=mode))
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=server.url, timeout=120,
                                   checks=[not_a_server_error, response_schema_conformance,
                                           status_code_conformance, content_type_conformance])

        name = f"{op.method.upper()} {op.path}"
        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            if mode == schemathesis.GenerationMode.POSITIVE:
                raise
            continue  # nothing about this operation can be invalid (no parameters, no body)
        except Exception as exc:
            raise AssertionError(f"{name} ({mode} data) failed with schemathesis seed {seed} "
                                 f"(replay with EDITX_FUZZ_SEED={seed}): {exc}") from exc
        seen.append(name)
    print(f"schemathesis: {len(set(seen))} operations, valid and invalid data, in {time.monotonic() - started:.0f} s")
    assert {"POST /clone", "POST /edit", "POST /transcribe", "GET /status", "GET /logs", "POST /v1/audio/speech",
            "POST /v1/audio/transcriptions", "POST /v1/audio/voices"} <= set(seen), seen


def test_spec_documents_the_refusals(server: Server) -> None:
    spec = httpx.get(server.url + "/docs.json").json()
    clone = spec["paths"]["/clone"]["post"]["responses"]
    for status in ("400", "401", "408", "413", "415", "429", "503"):
        assert clone[status]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorBody"
    assert "EDITX_UPLOAD_IDLE_S" in clone["408"]["description"]  # the idle rule is documented
    assert "401" in spec["paths"]["/status"]["get"]["responses"]
    assert "422" not in spec["paths"]["/logs"]["get"]["responses"]
    assert "401" not in spec["paths"]["/livez"]["get"]["responses"]
    for path in ("/v1/audio/speech", "/v1/audio/transcriptions", "/v1/audio/voices"):
        responses = spec["paths"][path]["post"]["responses"]
        for status in ("400", "408", "413", "415", "429", "503"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["$ref"] == "#/components/schemas/OpenAIErrorBody", (path, status)


def _silent_upload(server: Server, answers: list[int]) -> None:
    """A client that announces a body and then sends nothing at all."""
    with socket.create_connection((server.host, server.port), timeout=UPLOAD_IDLE_S + 30) as sock:
        sock.sendall(b"POST /clone HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000\r\n\r\n")
        try:
            data = sock.recv(4096)
        except OSError:
            answers.append(-1)
            return
        answers.append(int(data.split(b" ", 2)[1]) if data else -1)


def test_silent_uploads_free_their_slots_after_the_idle_limit(server: Server, prompt_wav: bytes) -> None:
    answers: list[int] = []
    silent = [threading.Thread(target=_silent_upload, args=(server, answers), daemon=True)
              for _ in range(MAX_UPLOADS)]
    started = time.monotonic()
    for t in silent:
        t.start()
    time.sleep(min(1.0, UPLOAD_IDLE_S / 2))
    # Every upload slot is held by a silent client: one more is refused at once.
    r = httpx.post(server.url + "/transcribe", files={"audio": ("a.wav", prompt_wav)}, timeout=10)
    assert r.status_code == 429 and r.headers["retry-after"], r.text
    for t in silent:
        t.join(timeout=UPLOAD_IDLE_S + 20)
    took = time.monotonic() - started
    assert answers == [408] * MAX_UPLOADS, answers
    assert took < UPLOAD_TIMEOUT_S, took  # freed by the idle limit, not the whole-body deadline
    r = httpx.post(server.url + "/transcribe", files={"audio": ("a.wav", prompt_wav)}, timeout=120)
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------ saturation
def _trickle(server: Server, path: str, stop: threading.Event, answers: list[int]) -> None:
    """A client that announces a body and sends it one byte a second (a slowloris upload)."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     "Content-Length: 100000\r\n\r\n".encode())
        sock.settimeout(0.9)
        while not stop.is_set():
            try:
                sock.sendall(b"x")
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                answers.append(-1)
                return
            if data:
                answers.append(int(data.split(b" ", 2)[1]))
                return
            answers.append(-1)
            return


def test_slow_uploads_do_not_starve_others(server: Server, prompt_wav: bytes) -> None:
    stop = threading.Event()
    answers: list[int] = []
    trickles = [threading.Thread(target=_trickle, args=(server, "/clone", stop, answers), daemon=True)
                for _ in range(32)]
    for t in trickles:
        t.start()
    try:
        time.sleep(1.0)  # all 32 are inside, trickling
        for path in ("/status", "/livez", "/readyz", "/metrics", "/docs.json"):
            start = time.monotonic()
            r = httpx.get(server.url + path, timeout=10)
            assert r.status_code == 200 and time.monotonic() - start < 1.0, (path, r.status_code)
        start = time.monotonic()
        r = httpx.post(server.url + "/clone", files={"prompt_audio": ("a.wav", prompt_wav)},
                       data={"prompt_text": PROMPT_TEXT, "target_text": "Hello there.", "seed": "2"}, timeout=120)
        assert r.status_code == 200, r.text
        assert time.monotonic() - start < UPLOAD_TIMEOUT_S + 30
        # Past MAX_UPLOADS bodies at once, one more is refused at once, saying when to retry.
        extra = [threading.Thread(target=_trickle, args=(server, "/edit", stop, answers), daemon=True)
                 for _ in range(MAX_UPLOADS - 32)]
        for t in extra:
            t.start()
        time.sleep(0.5)
        r = httpx.post(server.url + "/transcribe", files={"audio": ("a.wav", prompt_wav)}, timeout=10)
        assert r.status_code == 429 and r.headers["retry-after"], r.text
        # The deadline ends every trickling upload with a 408.
        for t in trickles + extra:
            t.join(timeout=UPLOAD_TIMEOUT_S + 20)
    finally:
        stop.set()
    assert answers.count(408) == len(trickles) + len(extra), answers
    assert httpx.get(server.url + "/status", timeout=5).status_code == 200


def test_operator_routes_answer_under_a_burst(server: Server, prompt_wav: bytes) -> None:
    def clone(_: int) -> int:
        return httpx.post(server.url + "/clone", files={"prompt_audio": ("a.wav", prompt_wav)},
                          data={"prompt_text": PROMPT_TEXT, "target_text": "Hi.", "seed": "3"}, timeout=300).status_code

    with ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(clone, i) for i in range(24)]
        time.sleep(1.0)
        for path in ("/status", "/metrics", "/livez", "/ui/"):
            took = []
            for _ in range(3):  # the median: one probe can lose the shared CPU to the 24 clones for a moment
                start = time.monotonic()
                r = httpx.get(server.url + path, timeout=10)
                took.append(time.monotonic() - start)
                assert r.status_code == 200, (path, r.status_code)
            assert sorted(took)[1] < 1.0, (path, took)
        codes = [f.result() for f in futures]
    assert all(c in (200, 429, 503) for c in codes), codes


# --------------------------------------------------------------------- metrics
def test_metrics_labels_are_bounded_and_leak_no_paths(server: Server, prompt_wav: bytes) -> None:
    up = httpx.post(server.url + "/ui/gradio_api/upload", files={"files": ("secret-name.wav", prompt_wav)})
    assert up.status_code == 200, up.text
    uploaded = up.json()[0]
    assert httpx.get(server.url + f"/ui/gradio_api/file={uploaded}").status_code == 200
    before = httpx.get(server.url + "/metrics").text
    for i in range(150):
        httpx.get(server.url + f"/no-such-page-{i}")
        httpx.get(server.url + f"/ui/gradio_api/file=/tmp/nothing-{i}.wav")
    after = httpx.get(server.url + "/metrics").text
    assert uploaded not in after and "secret-name" not in after and "no-such-page" not in after
    assert "nothing-" not in after
    endpoints = {line.split('endpoint="', 1)[1].split('"', 1)[0] for line in after.splitlines()
                 if 'endpoint="' in line}
    assert "other" in endpoints and "/ui/gradio_api/file={path_or_url}" in endpoints, endpoints
    assert len(endpoints) < 60, endpoints  # the routes there are (each task adds six), not one per path
    assert len(after) < len(before) + 20_000  # 300 distinct paths added a few series, not 300


# ---------------------------------------------------------------------- temp files
def test_no_temp_files_left_behind(server: Server, prompt_wav: bytes) -> None:
    before = server.temp_entries()
    ok = httpx.post(server.url + "/edit", files={"audio": ("a.wav", prompt_wav)},
                    data={"edit_type": "denoise", "seed": "1"}, timeout=300)
    assert ok.status_code == 200, ok.text
    bad = httpx.post(server.url + "/clone", files={"prompt_audio": ("a.wav", b"not audio" * 100)},
                     data={"target_text": "x"}, timeout=60)
    assert bad.status_code == 400
    # An abandoned upload: the client goes away halfway through the body.
    with socket.create_connection((server.host, server.port)) as sock:
        body = _form([_part("audio", prompt_wav, "a.wav")], "b")
        sock.sendall(f"POST /transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
    time.sleep(1.0)
    left = server.temp_entries() - before
    assert not left, left
