"""The OpenAI-compatible API (/v1) through the real ``openai`` client against a served instance.

One server per module (``bentoml.serve``, tiny model, CPU); a second and a third server on the
same voices folder check that replicas see each other's voices and that voices survive a restart.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import bentoml
import httpx
import numpy as np
import openai
import pytest

from tests.service_helpers import free_port, service_env, tone, wait_ready, wav_bytes

PROMPT_TEXT = "a test prompt"
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


@contextmanager
def served(tiny_root: Path, voices_dir: Path) -> Iterator[str]:
    """One editx service on its own port, with ``voices_dir`` as EDITX_VOICES_DIR."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**service_env(tiny_root), "EDITX_VOICES_DIR": str(voices_dir)}.items():
            mp.setenv(key, value)  # the server's worker process inherits these
        from service import EditXService

        with bentoml.serve(EditXService, port=free_port(), host="127.0.0.1") as server:
            wait_ready(server.url, timeout=300)
            yield server.url


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("voices")


@pytest.fixture(scope="module")
def url(tiny_root: Path, voices_dir: Path) -> Iterator[str]:
    with served(tiny_root, voices_dir) as u:
        yield u


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def voice(url: str) -> str:
    """A voice registered over plain HTTP (multipart, as curl sends it), with its transcript given."""
    r = httpx.post(f"{url}/v1/audio/voices", files={"audio": ("v.wav", wav_bytes(tone(2.0)), "application/octet-stream")},
                   data={"name": "reader", "text": PROMPT_TEXT}, timeout=600)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == "reader" and body["object"] == "voice" and body["text"] == PROMPT_TEXT
    assert body["duration_s"] == pytest.approx(2.0, abs=0.01) and body["created_at"] > 0
    return body["id"]


def decode_any(body: bytes, fmt: str) -> tuple[np.ndarray, int]:
    """Decode with a real decoder: FFmpeg (PyAV) for the containers, numpy for raw pcm."""
    if fmt == "pcm":
        return np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768, 24000
    frames = []
    with av.open(io.BytesIO(body)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray().reshape(-1))
    return np.concatenate(frames), rate


def speak(client: openai.OpenAI, voice: str, **kwargs: object):  # noqa: ANN201 - the SDK's raw response
    args = {"model": "tts-1", "voice": voice, "input": "Hello there.", "extra_body": {"seed": 0}, **kwargs}
    return client.audio.speech.with_raw_response.create(**args)


def test_models_list(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"step-audio-editx", "whisper-1"}
    assert models["step-audio-editx"].object == "model" and models["step-audio-editx"].owned_by
    assert models["step-audio-editx"].created > 0


def duration(raw, fmt: str) -> float:  # noqa: ANN001 - the SDK's raw response
    """Seconds of audio in an answer, by decoding it (a streamed answer has no duration header)."""
    samples, rate = decode_any(raw.content, fmt)
    return samples.size / rate


@pytest.fixture(scope="module")
def reference_s(client: openai.OpenAI, voice: str) -> float:
    """Length of the seed-0 answer as raw pcm: every format must decode to it."""
    return duration(speak(client, voice, response_format="pcm"), "pcm")


@pytest.mark.parametrize("fmt", FORMATS)
def test_speech_in_every_format_decodes_at_24khz(client: openai.OpenAI, voice: str, reference_s: float,
                                                 fmt: str) -> None:
    raw = speak(client, voice, response_format=fmt)
    samples, rate = decode_any(raw.content, fmt)
    # opus decodes at 48 kHz (Opus always does); the others at the service's 24 kHz
    assert rate == (48000 if fmt == "opus" else 24000)
    # the same seed gives the same audio; encoders add at most a frame or two of priming/padding (mp3: ~50 ms)
    assert samples.size / rate == pytest.approx(reference_s, abs=0.08), fmt
    assert reference_s > 0.5 and np.abs(samples).max() > 0.01
    if "x-editx-duration-s" in raw.headers:  # a finished answer says its length up front
        assert float(raw.headers["x-editx-duration-s"]) == pytest.approx(reference_s, abs=1e-3)
    assert raw.headers["content-type"].startswith({"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
                                                   "flac": "audio/flac", "wav": "audio/wav",
                                                   "pcm": "audio/pcm"}[fmt])


def test_streamed_speech_arrives_in_several_chunks(client: openai.OpenAI, voice: str) -> None:
    with client.audio.speech.with_streaming_response.create(
            model="step-audio-editx", voice=voice, input="Hello there.", response_format="pcm",
            extra_body={"seed": 0}) as response:
        chunks = [c for c in response.iter_bytes() if c]
        duration = response.headers.get("x-editx-duration-s")
    assert len(chunks) >= 2
    samples, _ = decode_any(b"".join(chunks), "pcm")
    if duration is not None:  # a finished answer sent in pieces knows its length up front
        assert samples.size / 24000 == pytest.approx(float(duration), abs=1e-3)


def test_streamed_speech_first_bytes_before_the_end(client: openai.OpenAI, voice: str) -> None:
    raw = speak(client, voice, response_format="pcm")
    assert raw.headers["x-editx-streamed"] == "true"
    import time

    text = "Hello there. This is a second sentence. And here is a third one."  # generated together
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice=voice, input=text, response_format="pcm") as response:
        start = time.perf_counter()
        it = response.iter_bytes()
        next(it)
        first = time.perf_counter() - start
        for _ in it:
            pass
        total = time.perf_counter() - start
    assert first < total / 2


def test_sse_events_parse(client: openai.OpenAI, voice: str) -> None:
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice=voice, input="Hello there.", response_format="wav", stream_format="sse",
            extra_body={"seed": 0}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines() if line.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2 and events[-1]["type"] == "speech.audio.done"
    usage = events[-1]["usage"]
    assert usage["output_tokens"] > 0 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    samples, rate = decode_any(b"".join(base64.b64decode(e["audio"]) for e in deltas), "wav")
    assert rate == 24000 and samples.size / rate > 0.5


def test_instructions_run_edit_passes(client: openai.OpenAI, url: str, voice: str) -> None:
    raw = speak(client, voice, response_format="wav", instructions="happy")
    assert raw.headers["x-editx-instructions"] == "emotion:happy"
    assert raw.headers["x-editx-edit-passes"] == "1" and raw.headers["x-editx-iterations"] == "2"
    logs = httpx.get(f"{url}/logs", params={"limit": 50}, timeout=10).json()
    assert any("instructions [emotion:happy]" in r["message"] for r in logs)  # the request's line
    assert any(r["message"].startswith("clone + 1 edit pass") for r in logs)  # the engine: one job, two steps

    two = speak(client, voice, response_format="wav", instructions="whisper, Slower")
    assert two.headers["x-editx-instructions"] == "style:whisper, speed:slower"
    assert two.headers["x-editx-edit-passes"] == "2"


def test_bad_instructions_list_what_is_allowed(client: openai.OpenAI, voice: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        speak(client, voice, instructions="sing like a pirate")
    message = bad.value.body["message"]
    assert bad.value.body["param"] == "instructions" and "happy" in message and "whisper" in message
    with pytest.raises(openai.BadRequestError, match="emotion:remove or style:remove"):
        speak(client, voice, instructions="remove")


def test_speed_two_halves_the_duration(client: openai.OpenAI, voice: str) -> None:
    normal = speak(client, voice, response_format="wav", speed=1.0)
    fast = speak(client, voice, response_format="wav", speed=2.0)
    assert fast.headers["x-editx-speed"] == "2"
    assert duration(fast, "wav") / duration(normal, "wav") == pytest.approx(0.5, abs=0.05)
    edited = speak(client, voice, response_format="wav", speed=2.0, instructions="happy")  # clone, then edit
    assert edited.headers["x-editx-speed"] == "2" and edited.headers["x-editx-edit-passes"] == "1"


def test_speed_out_of_range_is_a_bad_request(client: openai.OpenAI, voice: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        speak(client, voice, speed=5.0)
    assert bad.value.body["param"] == "speed"


def test_unknown_voice_bad_format_and_taken_name(client: openai.OpenAI, url: str, voice: str) -> None:
    with pytest.raises(openai.NotFoundError, match="reader"):  # the message lists the known voices
        speak(client, "nobody")
    with pytest.raises(openai.BadRequestError) as bad:
        speak(client, voice, response_format="ogg")
    assert bad.value.body["param"] == "response_format" and bad.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        speak(client, voice, model="tts-2")
    with pytest.raises(openai.APIStatusError) as big:  # the engine's text limit, in OpenAI's shape
        speak(client, voice, input="a" * 10_001)
    assert big.value.status_code == 413 and big.value.body["param"] == "input"
    # The message names the field as the request sent it, not the engine's target_text.
    assert big.value.body["message"].startswith("input has 10001 characters"), big.value.body
    assert "target_text" not in big.value.body["message"]
    r = httpx.post(f"{url}/v1/audio/speech", json={"model": "tts-1", "input": "Hello."}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "voice", r.text  # no voice: named voice
    r = httpx.post(f"{url}/v1/audio/speech", content=b'{"voice": "x", "input": "\xff"}', timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_body", r.text
    with pytest.raises(openai.NotFoundError):  # an unknown /v1 path is OpenAI's 404 object
        client.get("/audio/nothing", cast_to=httpx.Response)
    with pytest.raises(openai.ConflictError):
        client.audio.voices.create(audio_sample=("v.wav", wav_bytes(tone(1.0))), name=voice, consent="unused")
    r = httpx.post(f"{url}/v1/audio/voices", files={"audio": ("v.wav", wav_bytes(tone(1.0)))},
                   data={"name": "no spaces allowed"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "name"
    r = httpx.post(f"{url}/v1/audio/voices", files={"audio": ("v.wav", b"not audio")}, data={"name": "x"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "audio"


def test_transcriptions_in_every_format(client: openai.OpenAI, tmp_path: Path) -> None:
    from tests.speech import SENTENCE, speak as espeak

    path = espeak(SENTENCE, tmp_path / "s.wav")
    with path.open("rb") as f:
        assert "stella" in client.audio.transcriptions.create(model="whisper-1", file=f).text.lower()
    with path.open("rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert "store" in text.lower()
    with path.open("rb") as f:
        srt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")
    assert re.match(r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n.*Stella", srt, flags=re.S)
    with path.open("rb") as f:
        vtt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ") and "Stella" in vtt
    with path.open("rb") as f:
        verbose = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                     timestamp_granularities=["word", "segment"],
                                                     language="en", temperature=0.0, prompt="Stella")
    assert verbose.language == "en" and verbose.duration == pytest.approx(4.0, abs=0.5)
    assert verbose.segments and verbose.segments[0].start == 0.0 and "Stella" in verbose.segments[0].text
    words = [w.word.lower().strip(".") for w in verbose.words]
    assert words[:3] == ["please", "call", "stella"]
    assert all(a.end <= b.start + 1e-6 for a, b in zip(verbose.words, verbose.words[1:]))
    with path.open("rb") as f, pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=f, response_format="docx")  # type: ignore[arg-type]


def test_translations_with_the_english_only_whisper_name_the_setting(client: openai.OpenAI, tmp_path: Path) -> None:
    from tests.speech import SENTENCE, speak as espeak

    path = espeak(SENTENCE, tmp_path / "s.wav")
    with path.open("rb") as f, pytest.raises(openai.BadRequestError) as err:
        client.audio.translations.create(model="whisper-1", file=f)
    assert err.value.status_code == 400
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "model"
    assert "EDITX_ASR_MODEL" in body["message"] and "English-only" in body["message"]


def test_native_clone_with_a_voice(url: str, voice: str) -> None:
    # multipart, as curl -F sends it (the audio APIs take form-data), with no file part at all
    form = {"voice": (None, voice), "target_text": (None, "Good morning.")}
    r = httpx.post(f"{url}/clone", files=form, timeout=600)
    assert r.status_code == 200, r.text
    samples, rate = decode_any(r.content, "wav")
    assert rate == 24000 and samples.size > 0
    r = httpx.post(f"{url}/clone", files={"voice": (None, "nobody"), "target_text": (None, "Hi.")}, timeout=60)
    assert r.status_code == 404 and r.json()["field"] == "voice"  # the native shape: {error, field}


def test_voices_are_shared_between_replicas_and_survive_a_restart(
        client: openai.OpenAI, url: str, voice: str, tiny_root: Path, voices_dir: Path) -> None:
    # A second service on the same folder is also what a restart is: a new process, an empty memory
    # (and a memory-only prompt cache), the voices only on disk.
    with served(tiny_root, voices_dir) as replica:
        other = openai.OpenAI(base_url=f"{replica}/v1", api_key="unused", max_retries=0, timeout=600)
        assert voice in [v["id"] for v in httpx.get(f"{replica}/v1/audio/voices", timeout=10).json()["data"]]
        samples, rate = decode_any(speak(other, voice, response_format="wav").content, "wav")
        assert rate == 24000 and samples.size > 0
        logs = httpx.get(f"{replica}/logs", params={"limit": 100}, timeout=10).json()
        # the features came from the voice folder: nothing was computed for the prompt
        assert any("prompt cache hit" in r["message"] for r in logs)
        assert not any("prompt features computed" in r["message"] for r in logs)

        created = other.audio.voices.create(audio_sample=("v.wav", wav_bytes(tone(1.5))), name="second",
                                            consent="unused", extra_body={"text": PROMPT_TEXT})
        assert created.id == "second"
        # the first service never heard of it, and finds it in the folder
        assert httpx.get(f"{url}/v1/audio/voices/second", timeout=10).json()["text"] == PROMPT_TEXT
        assert speak(client, "second", response_format="wav").headers["x-editx-voice"] == "second"
        deleted = other.audio.voices.delete("second")
        assert deleted.deleted and deleted.id == "second"
    with pytest.raises(openai.NotFoundError):  # deleted by the other service: gone here too
        client.audio.voices.delete("second")


def test_readme_openai_snippet_runs_as_pasted(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    from tests.readme_snippets import DEFAULT_URL, code_block
    from tests.speech import SENTENCE, speak as espeak

    snippet = code_block("python", "from openai import OpenAI")
    espeak(SENTENCE, tmp_path / "voice.wav")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet.replace(DEFAULT_URL, url), "README.md", "exec"), {})  # noqa: S102
    heard, models = capsys.readouterr().out.splitlines()
    assert "stella" in heard.lower() and "step-audio-editx" in models
    samples, rate = decode_any((tmp_path / "speech.wav").read_bytes(), "wav")
    assert rate == 24000 and samples.size > 0


def test_readme_openai_curl_lines_run_as_pasted(url: str, tmp_path: Path) -> None:
    from tests.readme_snippets import DEFAULT_URL, code_block
    from tests.speech import SENTENCE, speak as espeak

    espeak(SENTENCE, tmp_path / "voice.wav")
    script = "set -euo pipefail\n" + code_block("bash", "-F name=narrator").replace(DEFAULT_URL, url)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert '"object":"voice"' in done.stdout.replace(" ", "") and "speech.audio.done" in done.stdout
    assert "-->" in done.stdout and '"whisper-1"' in done.stdout and '"deleted":true' in done.stdout
    for name, fmt in (("speech.mp3", "mp3"), ("cloned-narrator.wav", "wav")):
        samples, rate = decode_any((tmp_path / name).read_bytes(), fmt)
        assert rate == 24000 and samples.size > 0


def test_readme_dialogue_curl_lines_run_as_pasted(url: str, tmp_path: Path) -> None:
    """The Dialogue section's block: two voices registered, a dialogue as JSON turns and as a captioned script,
    a streamed one with caption events, and a captioned clone."""
    from tests.readme_snippets import DEFAULT_URL, code_block
    from tests.speech import require_espeak

    require_espeak()
    script = "set -euo pipefail\n" + code_block("bash", "localhost:3000/dialogue").replace(DEFAULT_URL, url)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for name in ("dialogue.wav", "dialogue-captioned.wav"):
        samples, rate = decode_any((tmp_path / name).read_bytes(), "wav")
        assert rate == 24000 and samples.size > 24000, name
    out = done.stdout
    assert "alice: Good morning, Bob." in out and "bob: Morning! Coffee?" in out and " --> " in out  # the SRT
    assert '"type": "speech.caption"' in out and "<v bob>Two." in out and "speech.audio.done" in out  # the stream
    assert "WEBVTT" in out and "Good morning." in out  # the captioned clone
