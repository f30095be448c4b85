"""Many requests at once over real HTTP (bentoml.serve, tiny model): batching, abort on disconnect, streaming."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest

from tests.runners.test_lifecycle import wait_for
from tests.service_helpers import decode, free_port, service_env, tone, wait_ready, wav_bytes

VOICE = wav_bytes(tone(2.5))
LONG_TOKENS = 1500  # the tiny model never says EOS: answers run to this cap unless aborted


@contextmanager
def served(tiny_root: Path, max_new_tokens: int) -> Iterator[str]:
    """A real server on the tiny model whose answers are ``max_new_tokens`` ids long; yields its URL."""
    env = service_env(tiny_root) | {"EDITX_MAX_NEW_TOKENS": str(max_new_tokens)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        from service import EditXService

        with bentoml.serve(EditXService, port=free_port(), host="127.0.0.1") as server:
            wait_ready(server.url, timeout=300)
            yield server.url


@pytest.fixture(scope="module")
def server_url(tiny_root: Path) -> Iterator[str]:
    with served(tiny_root, 40) as url:
        yield url


def clone(url: str, k: int, **extra: str) -> httpx.Response:
    data = {"target_text": f"Request number {k} speaks now.", "prompt_text": "a prompt", "seed": str(k)} | extra
    return httpx.post(f"{url}/clone", files={"prompt_audio": ("v.wav", VOICE)}, data=data, timeout=300)


def scheduler(url: str) -> dict:
    return httpx.get(f"{url}/status", timeout=10).json()["scheduler"]


def test_sixteen_concurrent_clones_are_batched_and_each_equals_its_seed_alone(server_url: str) -> None:
    n = 16
    alone = [clone(server_url, k).content for k in range(n)]
    steps_before = scheduler(server_url)["steps"]
    batches_before = httpx.get(f"{server_url}/status", timeout=10).json()["decoder"]["batches"]
    results: list[httpx.Response | None] = [None] * n
    barrier = threading.Barrier(n)

    def run(k: int) -> None:
        barrier.wait()
        results[k] = clone(server_url, k)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None and r.status_code == 200 for r in results)
    for k in range(n):
        together, by_itself = decode(results[k].content)[0], decode(alone[k])[0]
        assert together.size == by_itself.size
        # The LLM's ids are the same; the decoder worker ran the decodes as batches, whose kernels round a
        # little differently (tests/runners/test_decoder_worker.py measures it): a few 16-bit steps at most.
        np.testing.assert_allclose(together, by_itself, rtol=0, atol=3e-4)
    # 16 × 40 ids would take ≥ 640 steps one at a time; batched they share steps
    assert scheduler(server_url)["steps"] - steps_before < 400
    decoder = httpx.get(f"{server_url}/status", timeout=10).json()["decoder"]
    # fewer decoder batches than decodes: the flow and vocoder ran several requests at once
    assert decoder["batches"] - batches_before < n and decoder["mean_batch_size"] > 1


def _raw_clone_then_hang_up(url: str, hang_up: threading.Event, **fields: str) -> None:
    """Send a multipart /clone by hand and close the socket when ``hang_up`` is set, reading nothing."""
    boundary = "editxboundary"
    parts = [(name, None, value.encode()) for name, value in fields.items()]
    parts.append(("prompt_audio", "v.wav", VOICE))
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        head = (f"POST /clone HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        sock.sendall(head.encode() + body)
        hang_up.wait(120)


def test_a_client_that_disconnects_is_aborted_and_nothing_more_is_computed(tiny_root: Path) -> None:
    with served(tiny_root, LONG_TOKENS) as url:
        for stream in ("false", "true"):
            before = scheduler(url)
            go = threading.Event()
            client = threading.Thread(target=_raw_clone_then_hang_up, args=(url, go),
                                      kwargs={"target_text": "Nobody listens.", "prompt_text": "a prompt",
                                              "stream": stream})
            client.start()
            started = wait_for(lambda: scheduler(url)["generated_tokens"] > before["generated_tokens"] + 10)
            go.set()
            client.join()
            assert started, "the request never started"
            assert wait_for(lambda: scheduler(url)["aborted"] == before["aborted"] + 1), scheduler(url)
            after = scheduler(url)
            assert after["running"] == 0
            made = after["generated_tokens"] - before["generated_tokens"]
            assert made < LONG_TOKENS  # it stopped well before its cap
            time.sleep(0.5)
            assert scheduler(url)["generated_tokens"] == after["generated_tokens"]  # nothing more since

        def aborted_metric() -> list[str]:
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            return [line for line in metrics.splitlines() if line.startswith("editx_requests_aborted")]

        wait_for(lambda: aborted_metric() == ["editx_requests_aborted_total 2.0"], timeout=10)
        assert aborted_metric() == ["editx_requests_aborted_total 2.0"]


def test_a_streamed_clone_arrives_in_chunks_before_the_last_id_and_decodes_whole(tiny_root: Path) -> None:
    with served(tiny_root, 400) as url:
        data = {"target_text": "Streaming over HTTP.", "prompt_text": "a prompt", "seed": "3", "stream": "true"}
        arrivals: list[tuple[float, int, int]] = []  # (time, bytes, ids made so far)
        body = b""
        start = time.perf_counter()
        with httpx.stream("POST", f"{url}/clone", files={"prompt_audio": ("v.wav", VOICE)}, data=data,
                          timeout=300) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("audio/wav")
            for piece in r.iter_bytes():
                if len(arrivals) < 3:
                    arrivals.append((time.perf_counter() - start, len(piece), scheduler(url)["running"]))
                body += piece
        total = time.perf_counter() - start
        assert len(arrivals) >= 2
        first_audio = next(t for t, n, _ in arrivals if n > 44)
        assert any(running == 1 for _, n, running in arrivals if n > 44)  # audio while still generating
        assert first_audio < 0.8 * total
        samples, rate = decode(body)  # the open-ended WAV header reads as a whole file
        assert rate == 24000
        whole = httpx.post(f"{url}/clone", files={"prompt_audio": ("v.wav", VOICE)},
                           data=data | {"stream": "false"}, timeout=300)
        assert samples.size == decode(whole.content)[0].size
        pcm = httpx.post(f"{url}/clone", files={"prompt_audio": ("v.wav", VOICE)},
                         data=data | {"response_format": "pcm"}, timeout=300)
        assert pcm.headers["content-type"] == "audio/pcm" and len(pcm.content) == 2 * samples.size
        refused = httpx.post(f"{url}/clone", files={"prompt_audio": ("v.wav", VOICE)},
                             data=data | {"response_format": "flac"}, timeout=60)  # flac is never streamed
        assert refused.status_code == 400 and refused.json()["field"] == "response_format"
        names = ("editx_queue_depth", "editx_batch_size", "editx_generated_tokens_total",
                 "editx_first_chunk_seconds_count", 'editx_stage_seconds_count{stage="prepare"}')

        def missing() -> list[str]:
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            return [name for name in names if name not in metrics]

        wait_for(lambda: not missing(), timeout=10)
        assert missing() == []
