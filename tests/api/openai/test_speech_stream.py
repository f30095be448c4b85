"""/v1/audio/speech over an engine that streams (``clone_stream``) and takes ``speed``: the wiring.

The engine here is a stand-in whose generation waits for the test, so the test can see the first
bytes arrive while the rest is not made yet, and see a client that goes away close the generation.
The /v1 router runs on a real uvicorn server (the test client of Starlette buffers whole bodies).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fastapi
import httpx
import numpy as np
import pytest
import torch
import uvicorn

from api.errors import BUSY_RETRY_AFTER_S, LOADING_RETRY_AFTER_S
from api.openai import build_router
from runners.audio import Audio
from runners.config import EngineConfig
from runners.errors import InvalidInputError
from runners.jobs import CloneJob
from runners.pipeline.chunks import AudioChunk, JobStream
from runners.voices import VoiceRegistry
from tests.service_helpers import free_port, tone

RATE = 24000
PIECE = RATE // 5  # 0.2 s per chunk
TOKENS = 8  # codec ids the fake reports per chunk


class StreamingEngine:
    """Runs jobs as the engine does (a JobStream of typed chunks); after the first chunk it waits for ``go``."""

    def __init__(self, voices: VoiceRegistry) -> None:
        self.voices = voices
        self.config = EngineConfig(model_path="tiny")
        self.ready, self.state, self.error, self.is_tiny = True, "loaded", None, True
        self.go = threading.Event()
        self.closed = threading.Event()
        self.cancelled: bool | None = None
        self.calls: list[dict] = []

    def run(self, job: CloneJob, *, stream: bool = False, progress=None, cancel=None) -> JobStream:  # noqa: ANN001
        if job.text == "fail":
            raise InvalidInputError("target_text is over the budget", field="target_text")
        text = self.voices.load(job.voice).voice.text if job.voice else job.prompt_text
        self.calls.append({"kind": "stream" if stream else "whole", "speed": job.speed, "text": text})
        self.calls += [{"kind": "edit", "edit": (e.edit_type, e.edit_info)} for e in job.edits]
        return JobStream(self._chunks(job, cancel), RATE, 1 + len(job.edits), job.kind)

    def _chunks(self, job: CloneJob, cancel: threading.Event | None) -> Iterator[AudioChunk]:
        try:
            if job.text == "slow":  # a long generation: runs until cancelled or closed
                while not (cancel is not None and cancel.is_set()):
                    time.sleep(0.05)
                    yield AudioChunk(np.zeros(0, np.float32), RATE, 0)
                self.cancelled = True
                return
            for i in range(5):
                if i == 1 and not self.go.wait(30):
                    raise TimeoutError("the test never let the generation go on")
                yield AudioChunk(np.full(int(PIECE / job.speed), 0.2, np.float32), RATE, i, tokens=TOKENS)
            yield AudioChunk(np.zeros(0, np.float32), RATE, 5, last=True, tokens=2)
        finally:
            self.closed.set()
            if job.text == "slow":
                self.cancelled = True


class Backend:
    def __init__(self, voices_dir: Path) -> None:
        self.voices = VoiceRegistry(voices_dir)
        self.engine = StreamingEngine(self.voices)
        self.voices.create("v", Audio(torch.from_numpy(tone(1.0)), 16000), "prompt words", [1, 2, 3],
                           torch.zeros(1, 10, 80), torch.zeros(1, 192), "v1|fake")


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Backend]]:
    backend = Backend(tmp_path / "voices")
    app = fastapi.FastAPI()
    app.include_router(build_router(lambda: backend))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", backend
    finally:
        backend.engine.go.set()
        server.should_exit = True
        thread.join(10)


def test_first_bytes_arrive_before_the_generation_is_done(served: tuple[str, Backend]) -> None:
    url, backend = served
    body = {"model": "tts-1", "voice": "v", "input": "Hello.", "response_format": "pcm"}
    with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["x-editx-streamed"] == "true"
        it = r.iter_bytes()
        first = next(it)
        assert first and not backend.engine.go.is_set()  # chunk 1 is not even made yet
        backend.engine.go.set()
        rest = b"".join(it)
    assert len(first + rest) == 2 * 5 * PIECE
    assert backend.engine.calls[0]["text"] == "prompt words"  # the voice's transcript
    for path in ("/v1/audio/voices", "/v1/voices"):
        assert [v["id"] for v in httpx.get(f"{url}{path}", timeout=10).json()["data"]] == ["v"]


def test_a_client_that_goes_away_closes_the_generation(served: tuple[str, Backend]) -> None:
    url, backend = served
    body = {"voice": "v", "input": "Hello.", "response_format": "wav"}
    with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=30) as r:
        next(r.iter_bytes())
    backend.engine.go.set()  # let the worker thread run into the closed stream
    assert backend.engine.closed.wait(10)


def test_errors_before_the_first_chunk_keep_their_status(served: tuple[str, Backend]) -> None:
    url, _ = served
    r = httpx.post(f"{url}/v1/audio/speech", json={"voice": "v", "input": "fail"}, timeout=30)
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "input"  # raised by the engine on target_text
    assert err["message"] == "input is over the budget"  # the message names the field as the client sent it
    r = httpx.post(f"{url}/v1/audio/speech", json={"voice": "v", "input": "  "}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"  # refused before the engine


def test_speed_reaches_the_engine_and_edits_use_the_finished_clone(served: tuple[str, Backend]) -> None:
    url, backend = served
    backend.engine.go.set()
    r = httpx.post(f"{url}/v1/audio/speech", timeout=30,
                   json={"voice": "v", "input": "Hello.", "response_format": "wav", "speed": 2.0})
    assert r.status_code == 200 and r.headers["x-editx-speed"] == "2"
    assert backend.engine.calls[-1] == {"kind": "stream", "speed": 2.0, "text": "prompt words"}
    r = httpx.post(f"{url}/v1/audio/speech", timeout=30,
                   json={"voice": "v", "input": "Hello.", "response_format": "pcm", "speed": 0.5,
                         "instructions": "sad, whisper"})
    assert r.status_code == 200 and r.headers["x-editx-edit-passes"] == "2"
    assert [c["kind"] for c in backend.engine.calls[-3:]] == ["stream", "edit", "edit"]
    assert backend.engine.calls[-3]["speed"] == 0.5
    assert len(r.content) == 2 * 5 * 2 * PIECE  # half speed: twice the samples
    r = httpx.post(f"{url}/v1/audio/speech", timeout=30,
                   json={"voice": "v", "input": "Hello.", "response_format": "flac"})
    assert r.status_code == 200 and r.headers["x-editx-streamed"] == "false"  # flac is sent whole
    assert backend.engine.calls[-1]["kind"] == "whole"
    assert float(r.headers["x-editx-duration-s"]) == pytest.approx(1.0)


def test_sse_usage_counts_streamed_tokens(served: tuple[str, Backend]) -> None:
    import json

    url, backend = served
    backend.engine.go.set()
    r = httpx.post(f"{url}/v1/audio/speech", timeout=30,
                   json={"voice": "v", "input": "Hello.", "response_format": "pcm", "stream_format": "sse"})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events].count("speech.audio.delta") == 5
    assert events[-1]["usage"]["output_tokens"] == 5 * TOKENS + 2  # every codec id the chunks reported


def test_unavailable_engine_and_full_queue_are_503_with_retry_after(served: tuple[str, Backend]) -> None:
    from runners.errors import QueueFullError

    url, backend = served
    engine = backend.engine
    engine.ready, engine.state = False, "loading"
    r = httpx.post(f"{url}/v1/audio/speech", json={"voice": "v", "input": "Hello."}, timeout=30)
    assert r.status_code == 503 and r.headers["retry-after"] == str(LOADING_RETRY_AFTER_S)
    assert r.json()["error"]["type"] == "service_unavailable_error" and "loading" in r.json()["error"]["message"]

    engine.ready, engine.state = True, "loaded"

    def full(*args: object, **kwargs: object) -> JobStream:
        raise QueueFullError("every generation slot is busy and the queue is full; retry shortly")

    engine.run = full  # type: ignore[method-assign]
    r = httpx.post(f"{url}/v1/audio/speech", json={"voice": "v", "input": "Hello."}, timeout=30)
    assert r.status_code == 503 and r.headers["retry-after"] == str(BUSY_RETRY_AFTER_S)  # busy, not loading
    assert r.json()["error"]["code"] == "queue_full"


def test_a_client_that_goes_away_before_the_first_byte_cancels_the_work(served: tuple[str, Backend]) -> None:
    url, backend = served
    backend.engine.cancelled = None
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/audio/speech", json={"voice": "v", "input": "slow", "instructions": "happy"},
                   timeout=1.0)
    deadline = time.monotonic() + 10
    while backend.engine.cancelled is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.engine.cancelled is True
