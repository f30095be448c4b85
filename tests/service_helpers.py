"""Helpers shared by the service, server and browser tests (not a test module)."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import httpx
import numpy as np
import pytest
import soundfile as sf
from starlette.testclient import TestClient

# Small, fast, still end to end: the tiny model never says EOS, so cap what it generates.
MAX_NEW_TOKENS = 60
# Small upload cap so the "huge upload" cases stay cheap; real speech stays far below it.
MAX_UPLOAD_BYTES = 2 * 1024 * 1024


def service_env(tiny_root: Path) -> dict[str, str]:
    """EDITX_* variables that make the service serve the session's tiny checkpoint quickly."""
    return {
        "EDITX_MODEL_PATH": "tiny",
        "EDITX_TINY_DIR": str(tiny_root),
        "EDITX_DEVICE": "cpu",
        "EDITX_CACHE_DIR": "",  # memory-only prompt cache: tests leave nothing behind
        "EDITX_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS),
        "EDITX_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def tone(seconds: float, rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    """A voiced-sounding test signal: a few harmonics with a slow vibrato, plus a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 15 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 5))
    rng = np.random.default_rng(0)
    wave = wave / np.abs(wave).max() * amplitude + rng.normal(0, 0.003, t.size)
    return wave.astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = 16000, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype="PCM_16" if fmt == "WAV" else None)
    return buf.getvalue()


def decode(body: bytes) -> tuple[np.ndarray, int]:
    data, rate = sf.read(io.BytesIO(body), dtype="float32")
    return data, rate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 300.0) -> None:
    """Poll /readyz until 200; fail with /status when the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    try:
        status = httpx.get(f"{url}/status", timeout=5).text
    except httpx.HTTPError as exc:
        status = repr(exc)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s; /status: {status}")


@contextmanager
def service_module(env: dict[str, str]) -> Iterator[ModuleType]:
    """The ``service`` module with ``env`` set, the log buffer attached and /metrics off, for in-process serving.

    /metrics is switched off while it runs: BentoML's metrics route hangs under TestClient.
    """
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        import service
        from api.logs import install

        # Re-attach the log buffer: a served instance started earlier in this process (bentoml.serve runs a
        # logging dictConfig here) may have disabled the loggers since `service` was first imported.
        install("editx", include_access_log=True)
        config = service.EditXService.config
        saved = config.get("metrics")
        config["metrics"] = {"enabled": False}
        try:
            yield service
        finally:  # the real-server tests in this process serve the same class, with metrics
            if saved is None:
                config.pop("metrics", None)
            else:
                config["metrics"] = saved


@contextmanager
def in_process_service(env: dict[str, str]) -> Iterator[tuple[TestClient, ModuleType]]:
    """One service instance in this process (TestClient over to_asgi()) with ``env`` set; stopped on exit."""
    with service_module(env) as service, TestClient(service.EditXService.to_asgi()) as client:
        yield client, service


@contextmanager
def served_instance(env: dict[str, str]) -> Iterator[str]:
    """One real editx server (``bentoml.serve``) on its own port with ``env`` set; yields its URL once ready."""
    import bentoml

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)  # the server's worker process inherits these
        from service import EditXService

        with bentoml.serve(EditXService, port=free_port(), host="127.0.0.1") as server:
            wait_ready(server.url, timeout=300)
            yield server.url
