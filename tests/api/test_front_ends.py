"""One request path: the native routes, /v1 and the UI's handlers give the same audio for the same job.

Every front end builds one typed job and the engine runs it through one pipeline, so a seeded clone
(whole or streamed) and a seeded clone followed by an edit pass ("instructions") must be the same
samples whichever front end asked. A whole FLAC carries its length on every route.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import TestClient

from tests.service_helpers import in_process_service, service_env, tone, wav_bytes
from ui.app import clone_action, stream_clone_action

TEXT = "The same words from every door."
SEED = 11


@pytest.fixture(scope="module")
def ready(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, ModuleType]]:
    env = {**service_env(tiny_root), "EDITX_VOICES_DIR": str(tmp_path_factory.mktemp("voices"))}
    with in_process_service(env) as (client, module):
        deadline = time.monotonic() + 300
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        r = client.post("/v1/audio/voices", data={"name": "same", "text": "a test prompt"},
                        files={"audio": ("v.wav", wav_bytes(tone(2.0)), "audio/wav")})
        assert r.status_code == 201, r.text
        yield client, module


def _flac(body: bytes) -> np.ndarray:
    info = sf.info(io.BytesIO(body))
    samples, rate = sf.read(io.BytesIO(body), dtype="int16")
    assert rate == 24000 and info.frames == samples.size  # the header knows the length
    return samples


def _native(client: TestClient, fmt: str, stream: bool, instructions: str = "") -> bytes:
    data = {"target_text": TEXT, "voice": "same", "seed": str(SEED), "response_format": fmt,
            "stream": "true" if stream else "false", "instructions": instructions}
    r = client.post("/clone", data=data, files={"unused": ("x", b"")})
    assert r.status_code == 200, r.text
    assert r.headers["x-editx-streamed"] == ("true" if stream else "false")
    return r.content


def _openai(client: TestClient, fmt: str, instructions: str | None = None) -> bytes:
    body = {"model": "tts-1", "voice": "same", "input": TEXT, "seed": SEED, "response_format": fmt}
    if instructions:
        body["instructions"] = instructions
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200, r.text
    return r.content


def _ui_whole(module: ModuleType, instructions: str = "") -> np.ndarray:
    path, _, _ = clone_action(module.current_engine(), None, "", TEXT, SEED, lambda stage, fraction: None,
                              instructions=instructions, voice_id="same")
    samples, rate = sf.read(path, dtype="int16")
    assert rate == 24000
    return samples


def test_a_whole_clone_is_the_same_audio_from_every_front_end(ready: tuple[TestClient, ModuleType]) -> None:
    client, module = ready
    native = _flac(_native(client, "flac", stream=False))
    v1 = _flac(_openai(client, "flac"))  # flac is always sent whole
    ui = _ui_whole(module)
    assert native.size > 24000 * 0.5
    np.testing.assert_array_equal(v1, native)
    np.testing.assert_array_equal(ui, native)


def test_a_streamed_clone_is_the_same_audio_from_every_front_end(ready: tuple[TestClient, ModuleType]) -> None:
    client, module = ready
    native = np.frombuffer(_native(client, "pcm", stream=True), "<i2")
    v1 = np.frombuffer(_openai(client, "pcm"), "<i2")  # /v1 streams every format but flac
    ui = np.concatenate([p for _, p in stream_clone_action(module.current_engine(), "same", None, "", TEXT, SEED)])
    assert native.size > 24000 * 0.5
    np.testing.assert_array_equal(v1, native)
    np.testing.assert_array_equal(ui, native)


def test_a_clone_then_edit_chain_is_the_same_audio_from_every_front_end(
        ready: tuple[TestClient, ModuleType]) -> None:
    client, module = ready
    plain = _flac(_native(client, "flac", stream=False))
    native = _flac(_native(client, "flac", stream=False, instructions="happy"))
    v1 = _flac(_openai(client, "flac", instructions="happy"))
    ui = _ui_whole(module, instructions="happy")
    assert native.size > 0 and not (native.size == plain.size and np.array_equal(native, plain))  # it was edited
    np.testing.assert_array_equal(v1, native)
    np.testing.assert_array_equal(ui, native)
    # streamed, the chain's last pass streams: the same audio on both API surfaces
    np.testing.assert_array_equal(np.frombuffer(_openai(client, "pcm", instructions="happy"), "<i2"),
                                  np.frombuffer(_native(client, "pcm", stream=True, instructions="happy"), "<i2"))


def test_a_whole_wav_and_flac_carry_their_length_on_every_route(ready: tuple[TestClient, ModuleType]) -> None:
    client, _ = ready
    for body in (_native(client, "wav", stream=False), _native(client, "flac", stream=False), _openai(client, "flac")):
        info = sf.info(io.BytesIO(body))
        samples, _ = sf.read(io.BytesIO(body), dtype="float32")
        assert 0 < info.frames == samples.size < 24000 * 60
