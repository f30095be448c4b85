"""The BentoML service in-process (TestClient over to_asgi()) on the tiny random model.

One service (one engine load) for the whole module. Its load is held open by
the ``before_load`` hook until the first test has seen /readyz answer 503,
then released. Every bad-input case checks the status, that the message names
the problem, and that the service still answers afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.service_helpers import MAX_UPLOAD_BYTES, decode, in_process_service, service_env, tone, wav_bytes

PROMPT_TEXT = "Please call Stella and ask her to bring these things."
TARGET_TEXT = "Good morning, how are you today?"
SENTENCE = "Please call Stella and ask her to bring these things with her from the store."


class Harness:
    """The running in-process service plus the gate that holds its first load."""

    def __init__(self, client: TestClient, gate: threading.Event, module: Any) -> None:
        self.client = client
        self.gate = gate
        self.service = module

    def wait_ready(self, timeout: float = 300.0) -> None:
        self.gate.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.get("/readyz").status_code == 200:
                return
            time.sleep(0.2)
        pytest.fail(f"service not ready after {timeout} s: {self.client.get('/status').text}")


@pytest.fixture(scope="module")
def harness(tiny_root: Path) -> Iterator[Harness]:
    gate = threading.Event()
    with pytest.MonkeyPatch.context() as mp:
        import service

        mp.setattr(service, "before_load", lambda engine: gate.wait(300))
        with in_process_service(service_env(tiny_root)) as (client, module):
            yield Harness(client, gate, module)
            gate.set()


@pytest.fixture()
def ready(harness: Harness) -> Harness:
    harness.wait_ready()
    return harness


@pytest.fixture(scope="module")
def prompt_wav() -> bytes:
    return wav_bytes(tone(2.0))


def _assert_still_serving(client: TestClient) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/status").json()["state"] == "loaded"


# ------------------------------------------------------------- readiness
def test_loading_is_reported_then_ready(harness: Harness, prompt_wav: bytes) -> None:
    c = harness.client
    if harness.gate.is_set():
        pytest.skip("the load was released by an earlier test (this test runs first in file order)")
    assert c.get("/livez").status_code == 200
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 503
    status = c.get("/status").json()
    assert status["state"] in ("unloaded", "loading") and status["ready"] is False
    # Requests during the load answer 503 at once instead of hanging on the engine.
    r = c.post("/clone", files={"prompt_audio": ("p.wav", prompt_wav)},
               data={"prompt_text": PROMPT_TEXT, "target_text": TARGET_TEXT})
    assert r.status_code == 503 and "loading" in r.json()["error"]
    assert r.headers["retry-after"]
    assert c.get("/vocabulary").status_code == 200  # needs no model
    harness.wait_ready()
    status = c.get("/status").json()
    assert status["state"] == "loaded" and status["ready"] is True and status["load_count"] == 1


# -------------------------------------------------------------- the APIs
def test_clone_end_to_end(ready: Harness, prompt_wav: bytes) -> None:
    r = ready.client.post(
        "/clone",
        # curl's default declared type: the bytes are judged, not the label
        files={"prompt_audio": ("voice.wav", prompt_wav, "application/octet-stream")},
        data={"prompt_text": PROMPT_TEXT, "target_text": TARGET_TEXT, "seed": "7"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    samples, rate = decode(r.content)
    assert rate == 24000 and samples.size > 0
    assert float(r.headers["x-editx-duration-s"]) == pytest.approx(samples.size / rate, abs=1e-3)
    assert int(r.headers["x-editx-tokens"]) > 0
    assert r.headers["x-editx-tiny-random-weights"] == "true"
    for stage in ("prepare", "llm", "flow", "vocoder", "total"):
        assert float(r.headers[f"x-editx-time-{stage}-s"]) >= 0


def test_edit_end_to_end_mp3(ready: Harness, prompt_wav: bytes) -> None:
    r = ready.client.post(
        "/edit",
        files={"audio": ("speech.wav", prompt_wav, "audio/x-wav")},
        data={"edit_type": "emotion", "edit_info": "happy", "audio_text": PROMPT_TEXT,
              "seed": "3", "response_format": "mp3"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/mpeg"
    samples, rate = decode(r.content)
    assert rate == 24000 and samples.size > 0
    assert r.headers["x-editx-iterations"] == "1"


def test_status_reports_what_operators_need(ready: Harness) -> None:
    s = ready.client.get("/status").json()
    assert s["device"] == "cpu" and s["llm_dtype"] == "float32"
    assert s["tiny_random_weights"] is True and "noise" in s["note"]
    assert s["model_path"] == "tiny" and s["model_root"]
    assert s["memory"]["rss_mb"] > 0 and s["memory"]["gpu_allocated_mb"] is None
    for package in ("torch", "transformers", "bentoml", "gradio"):
        assert s["versions"][package][0].isdigit()
    assert s["limits"]["max_upload_bytes"] == MAX_UPLOAD_BYTES and s["limits"]["max_audio_s"] == 30


def test_vocabulary_endpoint(ready: Harness) -> None:
    from runners.text.vocab import VOCABULARY

    assert ready.client.get("/vocabulary").json() == VOCABULARY.model_dump(mode="json")


def test_openapi_and_swagger(ready: Harness) -> None:
    spec = ready.client.get("/docs.json").json()
    for path in ("/clone", "/edit", "/transcribe", "/status", "/vocabulary", "/logs", "/cache/clear", "/healthz",
                 "/livez", "/readyz", "/metrics"):
        assert path in spec["paths"], path
    clone = spec["paths"]["/clone"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "Swagger" in ready.client.get("/").text or "swagger" in ready.client.get("/").text
    schema_text = str(spec)
    assert "prompt_audio" in schema_text and "response_format" in schema_text and clone


# ------------------------------------------------------------- bad input
BAD_CLONE: list[tuple[str, dict[str, Any], int, str, str | None]] = [
    # (case, overrides, status, text in the error, field)
    ("not audio", {"file": b"this is a text file, not audio" * 10}, 400, "not audio that can be decoded", "prompt_audio"),
    ("corrupt wav", {"file": b"RIFF\xff\x00\x00\x00WAVEfmt " + bytes(20)}, 400, "not audio that can be decoded",
     "prompt_audio"),
    ("empty file", {"file": b""}, 400, "empty file", "prompt_audio"),
    ("zero samples", {"file": wav_bytes(np.zeros(0, np.float32))}, 400, "no samples", "prompt_audio"),
    ("silent", {"file": wav_bytes(np.zeros(16000, np.float32))}, 400, "silent", "prompt_audio"),
    ("too short", {"file": wav_bytes(tone(0.05))}, 400, "shorter than 0.1 s", "prompt_audio"),
    ("too long", {"file": wav_bytes(tone(31.0))}, 413, "the limit is 30 s", "prompt_audio"),
    ("empty target", {"target_text": "   "}, 400, "target_text is empty", "target_text"),
    ("target too long", {"target_text": "a" * 10001}, 413, "target_text has 10001 characters", "target_text"),
]


@pytest.mark.parametrize(("case", "overrides", "status", "needle", "field"), BAD_CLONE, ids=[c[0] for c in BAD_CLONE])
def test_clone_bad_input(
    ready: Harness, prompt_wav: bytes, case: str, overrides: dict[str, Any], status: int, needle: str,
    field: str | None,
) -> None:
    data = {"prompt_text": PROMPT_TEXT, "target_text": TARGET_TEXT}
    data.update({k: v for k, v in overrides.items() if k != "file"})
    body = overrides.get("file", prompt_wav)
    r = ready.client.post("/clone", files={"prompt_audio": ("x.wav", body, "audio/wav")}, data=data)
    assert r.status_code == status, r.text
    err = r.json()
    assert needle in err["error"], err
    assert err["field"] == field
    _assert_still_serving(ready.client)
    # The refusal is in the live log too, where an operator looks (values it quotes from the request blanked).
    from runners.privacy import redact

    newest = ready.client.get("/logs", params={"min_level": "WARNING", "limit": 1}).json()
    assert newest and newest[-1]["message"] == f"refused with {status}: {redact(err['error'])}"


BAD_EDIT: list[tuple[str, dict[str, str], int, str, str | None]] = [
    ("unknown edit_type", {"edit_type": "colour"}, 400, "unknown edit_type 'colour'", "edit_type"),
    ("unknown edit_info", {"edit_info": "grumpy"}, 400, "unknown edit_info 'grumpy'", "edit_info"),
    ("missing edit_info", {"edit_info": ""}, 400, "needs edit_info", "edit_info"),
    ("value for denoise", {"edit_type": "denoise", "edit_info": "hard"}, 400, "takes no edit_info", "edit_info"),
    ("paralinguistic without target", {"edit_type": "paralinguistic", "edit_info": ""}, 400, "needs target_text",
     "target_text"),
    ("paralinguistic unknown leading tag",
     {"edit_type": "paralinguistic", "edit_info": "", "target_text": "[exhail] Well, that was close."}, 400,
     "unknown language or paralinguistic tag [exhail]", "target_text"),
    ("n_edit_iter 0", {"n_edit_iter": "0"}, 400, "n_edit_iter must be between 1 and 5", "n_edit_iter"),
    ("n_edit_iter 6", {"n_edit_iter": "6"}, 400, "n_edit_iter must be between 1 and 5", "n_edit_iter"),
]


@pytest.mark.parametrize(("case", "overrides", "status", "needle", "field"), BAD_EDIT, ids=[c[0] for c in BAD_EDIT])
def test_edit_bad_input(
    ready: Harness, prompt_wav: bytes, case: str, overrides: dict[str, str], status: int, needle: str,
    field: str | None,
) -> None:
    data = {"edit_type": "emotion", "edit_info": "happy", "audio_text": PROMPT_TEXT}
    data.update(overrides)
    r = ready.client.post("/edit", files={"audio": ("x.wav", prompt_wav, "audio/x-wav")}, data=data)
    assert r.status_code == status, r.text
    err = r.json()
    assert needle in err["error"], err
    assert err["field"] == field
    _assert_still_serving(ready.client)


def test_empty_transcript_without_auto_transcription_is_named(ready: Harness, prompt_wav: bytes) -> None:
    engine = ready.service.current_engine()
    engine.config.auto_transcribe = False
    try:
        r = ready.client.post("/clone", files={"prompt_audio": ("x.wav", prompt_wav)},
                              data={"prompt_text": " ", "target_text": TARGET_TEXT})
        e = ready.client.post("/edit", files={"audio": ("x.wav", prompt_wav)},
                              data={"edit_type": "style", "edit_info": "whisper"})
    finally:
        engine.config.auto_transcribe = True
    assert r.status_code == 400 and r.json()["field"] == "prompt_text"
    assert "EDITX_AUTO_TRANSCRIBE" in r.json()["error"]
    assert e.status_code == 400 and e.json()["field"] == "audio_text"
    _assert_still_serving(ready.client)


def test_unsupported_response_format_is_named(ready: Harness, prompt_wav: bytes) -> None:
    r = ready.client.post("/clone", files={"prompt_audio": ("x.wav", prompt_wav)},
                          data={"prompt_text": PROMPT_TEXT, "target_text": TARGET_TEXT, "response_format": "ogg"})
    assert r.status_code == 400 and "response_format" in r.text
    _assert_still_serving(ready.client)


def test_llm_token_budget_is_enforced(ready: Harness, prompt_wav: bytes) -> None:
    engine = ready.service.current_engine()
    saved = engine.config.max_total_tokens
    engine.config.max_total_tokens = 40  # the prompt alone is longer than this
    try:
        r = ready.client.post("/clone", files={"prompt_audio": ("x.wav", prompt_wav)},
                              data={"prompt_text": PROMPT_TEXT, "target_text": TARGET_TEXT})
    finally:
        engine.config.max_total_tokens = saved
    assert r.status_code == 413, r.text
    assert "LLM tokens" in r.json()["error"] and "the limit is 40" in r.json()["error"]
    _assert_still_serving(ready.client)


def test_huge_upload_is_refused_by_content_length(ready: Harness) -> None:
    body = b"\0" * (MAX_UPLOAD_BYTES + 2 * 1024 * 1024)
    r = ready.client.post("/clone", content=body,
                          headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and "request body too large" in r.json()["error"]
    _assert_still_serving(ready.client)


def test_huge_upload_is_cut_off_while_streaming(ready: Harness) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        nonlocal sent
        for _ in range(64):
            sent += 256 * 1024
            yield b"\0" * (256 * 1024)

    r = ready.client.post("/edit", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and "request body too large" in r.json()["error"]
    _assert_still_serving(ready.client)


def test_upload_within_limit_passes_the_cap(ready: Harness, prompt_wav: bytes) -> None:
    # Just under the cap still reaches the API (which then judges the bytes).
    padding = b"\0" * (MAX_UPLOAD_BYTES - 64 * 1024)
    r = ready.client.post("/clone", files={"prompt_audio": ("x.wav", padding)},
                          data={"prompt_text": PROMPT_TEXT, "target_text": TARGET_TEXT})
    assert r.status_code == 400 and r.json()["field"] == "prompt_audio"


def test_gradio_uploads_are_capped_too(ready: Harness) -> None:
    # Over the body cap: refused before Gradio reads anything.
    r = ready.client.post("/ui/gradio_api/upload", content=b"\0" * (MAX_UPLOAD_BYTES + 2 * 1024 * 1024),
                          headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413
    # Under the body cap but over the file limit: Gradio's own max_file_size refuses it.
    big = b"\0" * (MAX_UPLOAD_BYTES + 256 * 1024)
    r = ready.client.post("/ui/gradio_api/upload", files={"files": ("big.wav", big, "audio/wav")})
    assert r.status_code == 413, r.text
    small = wav_bytes(tone(1.0))
    r = ready.client.post("/ui/gradio_api/upload", files={"files": ("ok.wav", small, "audio/wav")})
    assert r.status_code == 200, r.text
    _assert_still_serving(ready.client)


# ------------------------------------------- transcription, cache, logs
@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from tests.speech import speak

    return speak(SENTENCE, tmp_path_factory.mktemp("speech") / "speech.wav").read_bytes()


def _words(text: str) -> list[str]:
    return "".join(ch for ch in text.lower() if ch.isalpha() or ch.isspace()).split()


def test_transcribe_endpoint_hears_the_words(ready: Harness, speech_wav: bytes) -> None:
    r = ready.client.post("/transcribe", files={"audio": ("speech.wav", speech_wav, "application/octet-stream")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"please", "call", "stella", "store"} <= set(_words(body["text"])), body
    assert body["language"] == "en"
    assert body["duration_s"] == pytest.approx(len(decode(speech_wav)[0]) / 16000, abs=0.01)


def test_transcribe_bad_input(ready: Harness, speech_wav: bytes) -> None:
    r = ready.client.post("/transcribe", files={"audio": ("x.txt", b"not audio at all" * 20)})
    assert r.status_code == 400 and r.json()["field"] == "audio"
    r = ready.client.post("/transcribe", files={"audio": ("s.wav", speech_wav)}, data={"language": "klingon"})
    assert r.status_code == 400 and r.json()["field"] == "language" and "klingon" in r.json()["error"]
    _assert_still_serving(ready.client)


def test_empty_prompt_text_is_transcribed_for_clone_and_edit(ready: Harness, speech_wav: bytes) -> None:
    since = time.time()
    r = ready.client.post("/clone", files={"prompt_audio": ("speech.wav", speech_wav)},
                          data={"prompt_text": "", "target_text": TARGET_TEXT, "seed": "1"})
    assert r.status_code == 200, r.text
    e = ready.client.post("/edit", files={"audio": ("speech.wav", speech_wav)},
                          data={"edit_type": "speed", "edit_info": "faster", "seed": "1"})
    assert e.status_code == 200, e.text
    logs = ready.client.get("/logs", params={"since": since, "limit": 1000}).json()
    heard = [rec["message"] for rec in logs if rec["message"].startswith("auto-transcribed")]
    assert [m.split(" (")[0] for m in heard] == ["auto-transcribed prompt_text", "auto-transcribed audio_text"], logs
    # The edit sent the same audio: its transcript came from the cache, Whisper ran once.
    assert any(rec["message"].startswith("transcript cache hit") for rec in logs), logs
    # Privacy: neither the transcript, the target text nor the edit value reaches the log (sizes do).
    text = str(logs).lower()
    assert all(m.endswith("characters)") for m in heard), heard
    assert "stella" not in text and "good morning" not in text and "faster" not in text, logs


def test_content_is_logged_only_when_asked(ready: Harness, prompt_wav: bytes) -> None:
    from runners import privacy

    def refusal_logged(edit_info: str) -> str:
        since = time.time()
        r = ready.client.post("/edit", files={"audio": ("x.wav", prompt_wav)},
                              data={"edit_type": "emotion", "edit_info": edit_info, "audio_text": PROMPT_TEXT})
        assert r.status_code == 400 and edit_info in r.json()["error"]  # the answer names the value
        return str(ready.client.get("/logs", params={"since": since}).json())

    assert "my-secret-mood" not in refusal_logged("my-secret-mood")
    privacy.configure(True)  # what EDITX_LOG_CONTENT=1 sets when the service starts
    try:
        assert "my-other-mood" in refusal_logged("my-other-mood")
    finally:
        privacy.configure(False)


def test_log_endpoint_returns_the_request_just_made(ready: Harness, prompt_wav: bytes) -> None:
    since = time.time()
    r = ready.client.post("/edit", files={"audio": ("x.wav", prompt_wav)},
                          data={"edit_type": "vad", "seed": "2"})
    assert r.status_code == 200, r.text
    logs = ready.client.get("/logs", params={"since": since}).json()
    done = [rec for rec in logs if rec["message"].startswith("edit vad:")]
    assert len(done) == 1 and done[0]["seconds"] > 0 and done[0]["level"] == "INFO"
    assert all(rec["created"] > since for rec in logs)
    assert ready.client.get("/logs", params={"min_level": "loud"}).status_code == 400


def test_cache_statistics_and_clear(ready: Harness) -> None:
    wav = wav_bytes(tone(1.5, amplitude=0.25))  # audio no other test sends
    before = ready.client.get("/status").json()["cache"]
    for _ in range(2):
        r = ready.client.post("/edit", files={"audio": ("x.wav", wav)}, data={"edit_type": "denoise", "seed": "4"})
        assert r.status_code == 200, r.text
    after = ready.client.get("/status").json()["cache"]
    assert after["misses"] == before["misses"] + 1 and after["hits"] == before["hits"] + 1
    assert after["entries"] >= 1 and after["time_saved_s"] > before["time_saved_s"]
    cleared = ready.client.post("/cache/clear").json()
    assert cleared["entries"] == 0 and cleared["hits"] == 0 and cleared["misses"] == 0
    assert ready.client.get("/status").json()["cache"]["entries"] == 0


# --------------------------------------------------------------------- UI
def test_ui_is_mounted_and_shares_the_engine(ready: Harness) -> None:
    r = ready.client.get("/ui/")
    assert r.status_code == 200 and "gradio" in r.text.lower()
    svc = bentoml.get_current_service()
    engine = ready.service.current_engine()  # what the UI callbacks call
    assert engine is svc.engine
    assert engine.load_count == 1
    assert ready.service.ui_blocks.max_file_size == MAX_UPLOAD_BYTES
    # The APIs still answer next to the mounted UI.
    assert ready.client.get("/vocabulary").status_code == 200


def test_ui_actions_run_on_the_shared_engine(ready: Harness, tmp_path: Path, prompt_wav: bytes) -> None:
    from ui.app import edit_action

    engine = ready.service.current_engine()
    source = tmp_path / "in.wav"
    source.write_bytes(prompt_wav)
    seen: list[tuple[str, float]] = []
    path, history, summary = edit_action(
        engine, [], str(source), "", "denoise", None, "", 1, 5, lambda stage, f: seen.append((stage, f))
    )
    samples, rate = decode(Path(path).read_bytes())
    assert rate == 24000 and samples.size > 0
    assert [h.label for h in history] == ["EDIT denoise"] and "tokens" in summary
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert engine.load_count == 1


# ----------------------------------------------------------- failed load
# ------------------------------------ uploads from browsers (webm) and phones (m4a)
@pytest.mark.parametrize("kind", ["m4a", "webm"])
def test_clone_takes_phone_and_browser_recordings(ready: Harness, kind: str) -> None:
    from tests.media import encode

    r = ready.client.post(
        "/clone",
        files={"prompt_audio": (f"voice.{kind}", encode(kind, tone(2.0), 16000), "application/octet-stream")},
        data={"prompt_text": PROMPT_TEXT, "target_text": TARGET_TEXT, "seed": "7"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    samples, rate = decode(r.content)
    assert rate == 24000 and samples.size > 0
    assert float(r.headers["x-editx-duration-s"]) == pytest.approx(samples.size / rate, abs=1e-3)


def test_transcribe_takes_a_browser_recording(ready: Harness) -> None:
    from tests.media import encode

    recording = encode("webm", tone(2.0), 16000)
    r = ready.client.post("/transcribe", files={"audio": ("recording.webm", recording, "audio/webm")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["text"], str) and body["elapsed_s"] >= 0
    assert body["duration_s"] == pytest.approx(2.0, abs=0.03)  # Opus' own delay is trimmed by the decoder
    # A recording cut off before its first sound: a 400 that says what is accepted.
    r = ready.client.post("/transcribe", files={"audio": ("recording.webm", recording[:300], "audio/webm")})
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["field"] == "audio" and "send WAV, FLAC, OGG/Opus, MP3, WebM, M4A/MP4 or AAC" in err["error"], err
    _assert_still_serving(ready.client)


def test_failed_load_is_not_ready_and_says_why(ready: Harness, prompt_wav: bytes, tmp_path: Path) -> None:
    """A second service whose model is missing: alive, not ready, /status and the APIs say why.

    Last in this module: after this second instance, the process's current service is no longer the
    one the ``ready`` harness serves.
    """
    from runners.config import EngineConfig
    from runners.engine import EditXEngine

    svc = ready.service
    missing = tmp_path / "no-model-here"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(svc, "make_engine", lambda: EditXEngine(EngineConfig(model_path=str(missing), model_source="local")))
        mp.setattr(svc, "before_load", lambda engine: None)
        with TestClient(svc.EditXService.to_asgi()) as c:
            deadline = time.monotonic() + 60
            while c.get("/status").json()["state"] != "failed" and time.monotonic() < deadline:
                time.sleep(0.1)
            status = c.get("/status").json()
            assert status["state"] == "failed" and status["ready"] is False
            assert "no-model-here" in status["error"]
            assert c.get("/livez").status_code == 200
            assert c.get("/readyz").status_code == 503
            r = c.post("/clone", files={"prompt_audio": ("x.wav", prompt_wav)},
                       data={"prompt_text": PROMPT_TEXT, "target_text": TARGET_TEXT})
            assert r.status_code == 503 and "failed to load" in r.json()["error"]
