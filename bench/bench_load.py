"""Load and soak figures: a few hundred mixed requests from 32 clients against a served instance.

    .venv/bin/python -m bench.bench_load                        # serves a tiny random model itself
    .venv/bin/python -m bench.bench_load --requests 600 --model /models

Loopback only, bounded (--requests, --max-seconds), stops by itself. Prints status counts per kind
(nothing may be lost: every request gets an answer), p50/p95 latency, the server's RSS and the entries
of its temp folder before and after. Asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

KINDS = {"clone": 0.3, "edit": 0.2, "transcribe": 0.15, "status": 0.15, "ui": 0.1, "vocabulary": 0.1}


def _wav(seconds: float, seed: int) -> bytes:
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = sum(np.sin(2 * np.pi * k * (140 + 10 * rng.random()) * t) / k for k in range(1, 4))
    buf = io.BytesIO()
    sf.write(buf, (0.3 * wave / np.abs(wave).max()).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _port() -> int:
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _request(client: httpx.Client, kind: str, voices: list[bytes], rng: random.Random) -> int:
    voice = rng.choice(voices)
    if kind == "clone":
        r = client.post("/clone", files={"prompt_audio": ("v.wav", voice)},
                        data={"prompt_text": "Please call Stella.", "target_text": "Good morning, how are you?",
                              "seed": str(rng.randint(0, 99))})
    elif kind == "edit":
        r = client.post("/edit", files={"audio": ("v.wav", voice)},
                        data={"edit_type": rng.choice(["denoise", "vad"]), "seed": "1"})
    elif kind == "transcribe":
        r = client.post("/transcribe", files={"audio": ("v.wav", voice)})
    elif kind == "status":
        r = client.get("/status")
    elif kind == "ui":
        r = client.get("/ui/")
    else:
        r = client.get("/vocabulary")
    return r.status_code


def run(url: str, requests: int, clients: int, max_seconds: float, temp_dir: Path | None) -> None:
    voices = [_wav(1.0 + 0.5 * i, i) for i in range(4)]
    rng = random.Random(0)
    plan = rng.choices(list(KINDS), weights=list(KINDS.values()), k=requests)
    lock = threading.Lock()
    codes: dict[str, Counter[int]] = defaultdict(Counter)
    latency: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + max_seconds

    def status() -> dict:
        return httpx.get(url + "/status", timeout=10).json()

    temp_before = sorted(p.name for p in temp_dir.iterdir()) if temp_dir else None
    rss_before = status()["memory"]["rss_mb"]

    def worker(index: int) -> None:
        local = random.Random(index)
        with httpx.Client(base_url=url, timeout=600) as client:
            while time.monotonic() < deadline:
                with lock:
                    if not plan:
                        return
                    kind = plan.pop()
                start = time.perf_counter()
                try:
                    code = _request(client, kind, voices, local)
                except httpx.HTTPError as exc:
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                with lock:
                    codes[kind][code] += 1
                    latency[kind].append(time.perf_counter() - start)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    time.sleep(1.0)  # let the last requests' clean-up run
    rss_after = status()["memory"]["rss_mb"]
    answered = sum(sum(c.values()) for c in codes.values())
    print(f"{answered} answered of {requests} planned in {wall:.1f} s by {clients} clients "
          f"({len(plan)} not sent: time limit); transport errors: {dict(errors) or 'none'}")
    print(f"{'kind':<11} {'n':>4} {'p50 s':>7} {'p95 s':>7}  status counts")
    for kind in KINDS:
        lat = sorted(latency[kind])
        if not lat:
            continue
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        print(f"{kind:<11} {len(lat):>4} {statistics.median(lat):>7.3f} {p95:>7.3f}  {dict(sorted(codes[kind].items()))}")
    total = Counter()
    for c in codes.values():
        total.update(c)
    print(f"all status codes: {dict(sorted(total.items()))}; 5xx: {sum(n for s, n in total.items() if s >= 500)}")
    print(f"server RSS: {rss_before:.0f} MiB before, {rss_after:.0f} MiB after")
    if temp_dir is not None:
        temp_after = sorted(p.name for p in temp_dir.iterdir())
        print(f"temp folder entries: {len(temp_before)} before {temp_before}, {len(temp_after)} after {temp_after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop sending after this long")
    parser.add_argument("--model", default="tiny", help="EDITX_MODEL_PATH of the served instance")
    parser.add_argument("--max-new-tokens", default="60", help="EDITX_MAX_NEW_TOKENS (the tiny model never stops)")
    args = parser.parse_args()

    import bentoml

    with tempfile.TemporaryDirectory(prefix="editx-bench-load-") as tmp:
        temp_dir = Path(tmp) / "server-tmp"
        temp_dir.mkdir()
        os.environ.update({
            "EDITX_MODEL_PATH": args.model, "EDITX_TINY_DIR": str(Path(tmp) / "tiny"), "EDITX_CACHE_DIR": "",
            "EDITX_MAX_NEW_TOKENS": args.max_new_tokens, "TMPDIR": str(temp_dir),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            # Another `bentoml serve` on the machine empties the shared metrics folder when it starts.
            "BENTOML_HOME": str(Path(tmp) / "bentoml-home"),
        })
        if args.model != "tiny":
            os.environ["EDITX_MODEL_SOURCE"] = "local"
        from service import EditXService

        with bentoml.serve(EditXService, port=_port(), host="127.0.0.1") as server:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    if httpx.get(server.url + "/readyz", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            run(server.url, args.requests, args.clients, args.max_seconds, temp_dir)


if __name__ == "__main__":
    main()
