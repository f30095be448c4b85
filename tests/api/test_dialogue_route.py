"""POST /dialogue and captions on every audio route, served in-process with the tiny model.

A dialogue is several registered voices taking turns, answered as one audio; with ``captions`` the
answer says where each turn's sentences are (a JSON body whole, server-sent events streamed). What a
user notices: one playable file, one caption per short turn in script order with its voice, the same
seeded script twice gives the same audio, a stream that plays turn 1 before the last turn exists, and
a 400 that names the turn, line or field at fault.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import TestClient

from tests.service_helpers import in_process_service, service_env, tone, wav_bytes
from tests.subtitles import parse_srt, parse_vtt

VOICES = ("alice", "bob", "carol")
SCRIPT = """[alice] Good morning.
[bob] (happy) Hello there.
[carol] Nice day.
[alice] It is.
[bob] Coffee?
[carol] (whisper) Yes please.
[alice] Two then.
[bob] Done."""
SCRIPT_VOICES = ["alice", "bob", "carol", "alice", "bob", "carol", "alice", "bob"]
SEED = 5
CLONE_TEXT = "One sentence here. And a second one."


@pytest.fixture(scope="module")
def client(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    env = {**service_env(tiny_root), "EDITX_VOICES_DIR": str(tmp_path_factory.mktemp("voices"))}
    with in_process_service(env) as (c, _module):
        deadline = time.monotonic() + 300
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        for i, name in enumerate(VOICES):
            r = c.post("/v1/audio/voices", data={"name": name, "text": "a test prompt"},
                       files={"audio": ("v.wav", wav_bytes(tone(1.5 + 0.3 * i)), "audio/wav")})
            assert r.status_code == 201, r.text
        yield c


def events(body: bytes) -> list[dict[str, Any]]:
    """The server-sent events of an answer, in order."""
    out = []
    for block in body.decode().split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block[:80]
            out.append(json.loads(block[len("data: "):]))
    return out


def audio_of(evts: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(e["audio"]) for e in evts if e["type"] == "speech.audio.delta")


def samples(body: bytes) -> np.ndarray:
    data, rate = sf.read(io.BytesIO(body), dtype="float32")
    assert rate == 24000
    return data


def check_dialogue_captions(captions: list[dict[str, Any]], duration_s: float) -> None:
    """One caption per (one-sentence) turn, in script order, each with its voice, times monotonic."""
    assert [c["turn"] for c in captions] == list(range(8))
    assert [c["voice"] for c in captions] == SCRIPT_VOICES
    assert [c["index"] for c in captions] == sorted(c["index"] for c in captions)
    starts = [c["start_s"] for c in captions]
    assert starts == sorted(starts) and starts[0] >= 0
    assert all(c["end_s"] > c["start_s"] for c in captions)
    assert all(b["start_s"] >= a["end_s"] - 0.05 for a, b in zip(captions, captions[1:]))  # cross-fades at most
    assert captions[-1]["end_s"] <= duration_s + 1e-3
    assert "Coffee" in captions[4]["text"] and "Yes please" in captions[5]["text"]


# ------------------------------------------------------------------ whole answers
def test_a_script_of_three_voices_is_one_wav_with_a_caption_per_turn(client: TestClient) -> None:
    r = client.post("/dialogue", json={"script": SCRIPT, "seed": SEED, "captions": "json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-editx-turns"] == "8" and r.headers["x-editx-sample-rate"] == "24000"
    body = r.json()
    assert body["response_format"] == "wav" and body["media_type"] == "audio/wav" and body["sample_rate"] == 24000
    audio = samples(base64.b64decode(body["audio"]))
    assert audio.size / 24000 == pytest.approx(body["duration_s"], abs=1e-3)
    check_dialogue_captions(body["captions"], body["duration_s"])
    spans = body["turns"]
    assert [(s["turn"], s["voice"]) for s in spans] == list(enumerate(SCRIPT_VOICES))
    assert all(s["start_s"] == c["start_s"] and s["end_s"] == c["end_s"] for s, c in zip(spans, body["captions"]))


def test_the_same_seeded_script_twice_is_the_same_audio(client: TestClient) -> None:
    """Audio only (a plain WAV), then with SRT captions: the same samples, within batched decoding's rounding."""
    plain = client.post("/dialogue", json={"script": SCRIPT, "seed": SEED})
    assert plain.status_code == 200, plain.text
    assert plain.headers["content-type"] == "audio/wav" and plain.headers["x-editx-streamed"] == "false"
    captioned = client.post("/dialogue", json={"script": SCRIPT, "seed": SEED, "captions": "srt"})
    assert captioned.status_code == 200, captioned.text
    body = captioned.json()
    first, second = samples(plain.content), samples(base64.b64decode(body["audio"]))
    assert first.size == second.size and first.size > 24000
    np.testing.assert_allclose(first, second, atol=1e-3)
    cues = parse_srt(body["captions"])
    assert [c.number for c in cues] == list(range(1, 9)) and [c.voice for c in cues] == SCRIPT_VOICES
    assert [c.start_s for c in cues] == sorted(c.start_s for c in cues)


def test_json_turns_with_edits_and_pauses(client: TestClient) -> None:
    turns = [{"voice": "alice", "text": "Hello.", "pause_after_ms": 1000},
             {"voice": "bob", "text": "Hi.", "instructions": "happy", "pause_after_ms": 0},
             {"voice": "alice", "text": "Bye."}]
    r = client.post("/dialogue", json={"turns": turns, "seed": 1, "captions": "vtt", "response_format": "flac"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["media_type"] == "audio/flac"
    cues = parse_vtt(body["captions"])
    assert [c.voice for c in cues] == ["alice", "bob", "alice"] and cues[0].text == "Hello."
    assert cues[1].start_s - cues[0].end_s >= 0.95  # the second's pause is heard
    assert samples(base64.b64decode(body["audio"])).size / 24000 == pytest.approx(body["duration_s"], abs=1e-3)


# ------------------------------------------------------------------ refusals
def _refused(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/dialogue", json=body)
    assert r.status_code == 400, r.text
    return r.json()


def test_unknown_voice_edit_value_or_bad_line_is_a_400_naming_it(client: TestClient) -> None:
    err = _refused(client, {"script": "[alice] Hi.\n[zelda] Who am I?"})
    assert "zelda" in err["error"], err
    err = _refused(client, {"turns": [{"voice": "alice", "text": "Hi."},
                                      {"voice": "bob", "text": "Oh.", "instructions": "hapy"}]})
    assert err["field"] == "turns[1].instructions" and "hapy" in err["error"], err
    err = _refused(client, {"script": "[alice] (hapy) Hi."})
    assert "hapy" in err["error"], err
    err = _refused(client, {"script": "[alice] Hi.\nno voice on this line"})
    assert "line 2" in err["error"], err
    err = _refused(client, {"turns": [{"voice": "alice", "text": "Hi.", "pause_after_ms": 20000}]})
    assert err["field"] == "turns[0].pause_after_ms", err


def test_turns_and_script_together_or_neither_is_a_400(client: TestClient) -> None:
    err = _refused(client, {"script": "[alice] Hi.", "turns": [{"voice": "alice", "text": "Hi."}]})
    assert "not both" in err["error"], err
    err = _refused(client, {"seed": 1})
    assert "turns" in err["error"] and "script" in err["error"], err
    err = _refused(client, {"script": "[alice] Hi.", "captions": "txt"})
    assert err["field"] == "captions", err
    r = client.post("/dialogue", data={"script": "[alice] Hi."})
    assert r.status_code == 415, r.text


# ------------------------------------------------------------------ streams
def test_a_streamed_dialogue_sends_turn_one_before_the_last_turn_is_made(client: TestClient) -> None:
    r = client.post("/dialogue", json={"script": SCRIPT, "seed": SEED, "stream": True, "captions": "vtt",
                                       "response_format": "pcm"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream") and r.headers["x-editx-streamed"] == "true"
    evts = events(r.content)
    kinds = [e["type"] for e in evts]
    assert kinds[0] == "speech.audio.delta" and kinds[-1] == "speech.audio.done"
    captions = [e for e in evts if e["type"] == "speech.caption"]
    first_caption, last_caption = kinds.index("speech.caption"), len(kinds) - 1 - kinds[::-1].index("speech.caption")
    assert captions[0]["caption"]["turn"] == 0 and captions[-1]["caption"]["turn"] == 7
    # Turn 0's caption (and the audio before it) left before the audio of the later turns was made.
    assert "speech.audio.delta" in kinds[first_caption:last_caption]
    assert captions[0]["cue"].split("\n")[2] == "<v alice>Good morning."
    done = evts[-1]
    pcm = np.frombuffer(audio_of(evts), dtype="<i2")
    assert pcm.size / 24000 == pytest.approx(done["duration_s"], abs=1e-3)
    check_dialogue_captions([e["caption"] for e in captions], done["duration_s"])
    assert len(parse_vtt(done["captions"])) == 8 and len(done["turns"]) == 8


def test_a_streamed_dialogue_without_captions_is_plain_audio(client: TestClient) -> None:
    r = client.post("/dialogue", json={"script": "[alice] Hi.\n[bob] Hello.", "seed": 2, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav" and r.headers["x-editx-streamed"] == "true"
    assert r.content[:4] == b"RIFF" and len(r.content) > 24000


# ------------------------------------------------------------------ captions on /clone and /v1
def _clone(client: TestClient, **fields: str) -> Any:
    data = {"voice": "alice", "target_text": CLONE_TEXT, "seed": "3", **fields}
    return client.post("/clone", data=data, files={"unused": ("x", b"")})


def test_clone_captions_whole_and_streamed(client: TestClient) -> None:
    r = _clone(client, captions="srt")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    cues = parse_srt(body["captions"])
    assert " ".join(c.text for c in cues) == CLONE_TEXT  # a short text is one piece; a long one, its sentences
    assert all(c.voice is None for c in cues) and body["turns"] is None
    assert samples(base64.b64decode(body["audio"])).size / 24000 == pytest.approx(body["duration_s"], abs=1e-3)
    r = _clone(client, captions="json", stream="true", response_format="wav")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    evts = events(r.content)
    caps = [e["caption"] for e in evts if e["type"] == "speech.caption"]
    assert " ".join(c["text"] for c in caps) == CLONE_TEXT
    assert evts[-1]["captions"] == caps and evts[-1]["tokens"] > 0
    wav = audio_of(evts)
    assert wav[:4] == b"RIFF"  # a streamed wav: the header says the length is unknown
    assert (len(wav) - 44) / 2 / 24000 == pytest.approx(evts[-1]["duration_s"], abs=1e-3)
    plain = _clone(client)
    assert plain.headers["content-type"] == "audio/wav"  # without captions: as before


def test_speech_captions_whole_and_streamed(client: TestClient) -> None:
    req = {"model": "tts-1", "voice": "bob", "input": "Hello there. How are you?", "seed": 4, "response_format": "mp3"}
    r = client.post("/v1/audio/speech", json={**req, "captions": "vtt"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    assert body["media_type"] == "audio/mpeg" and base64.b64decode(body["audio"])
    assert " ".join(c.text for c in parse_vtt(body["captions"])) == req["input"]
    r = client.post("/v1/audio/speech", json={**req, "captions": "json", "stream_format": "sse"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    evts = events(r.content)
    assert " ".join(e["caption"]["text"] for e in evts if e["type"] == "speech.caption") == req["input"]
    done = evts[-1]
    assert done["type"] == "speech.audio.done" and done["usage"]["output_tokens"] == done["tokens"] > 0
    assert audio_of(evts)[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3") or audio_of(evts)[0] == 0xFF
    # flac is made whole, then sent as events all the same: its one delta, the captions, done.
    r = client.post("/v1/audio/speech", json={**req, "response_format": "flac", "captions": "srt",
                                              "stream_format": "sse"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    evts = events(r.content)
    assert [e["type"] for e in evts][0] == "speech.audio.delta" and evts[-1]["type"] == "speech.audio.done"
    assert samples(audio_of(evts)).size / 24000 == pytest.approx(evts[-1]["duration_s"], abs=1e-3)
    assert " ".join(c.text for c in parse_srt(evts[-1]["captions"])) == req["input"]


def test_the_docs_describe_the_dialogue_route(client: TestClient) -> None:
    spec = client.get("/docs.json").json()
    op = spec["paths"]["/dialogue"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert {"turns", "script", "response_format", "stream", "seed", "captions"} <= set(schema["properties"])
    assert all(p.get("description") for p in schema["properties"].values())
    assert "application/json" in op["responses"]["200"]["content"]
    assert spec["components"]["schemas"]["SpeechRequest"]["properties"]["captions"]["description"]
