"""Jobs that outlive a request, over real HTTP: submit, poll progress, get the audio, cancel, expiry, bad input.

One service instance in this process behind uvicorn (a real socket: submit answers before its job has run,
which Starlette's TestClient would wait for), so the test can slow the engine's steps to cancel mid-job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service_helpers import decode, free_port, service_env, service_module, tone, wait_ready, wav_bytes

VOICE = wav_bytes(tone(2.0))
TEXT = "Please call Stella and ask her to bring these things."


@dataclass
class Served:
    url: str
    instance: Any  # the EditXService instance: its engine and its task store

    def slow_steps(self, seconds: float) -> None:
        """Make every engine step take at least ``seconds`` (0: as fast as it goes)."""
        events = self.instance.engine.events
        events.__dict__.pop("step", None)
        if seconds:
            original = events.step

            def step(*args: Any) -> None:
                time.sleep(seconds)
                original(*args)

            events.step = step


@pytest.fixture(scope="module")
def served(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import uvicorn

    env = service_env(tiny_root) | {"EDITX_TASK_TTL_S": "600", "EDITX_TASK_MAX_MB": "64",
                                    "EDITX_VOICES_DIR": str(tmp_path_factory.mktemp("task-voices"))}
    with service_module(env) as service:
        import bentoml

        port = free_port()
        server = uvicorn.Server(uvicorn.Config(service.EditXService.to_asgi(), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, timeout=300)
            yield Served(url, bentoml.get_current_service())
        finally:
            server.should_exit = True
            thread.join(60)


def submit_edit(url: str, **form: str) -> str:
    data = {"edit_type": "emotion", "edit_info": "happy", "audio_text": TEXT, "seed": "1"} | form
    r = httpx.post(f"{url}/tasks/edit/submit", files={"audio": ("voice.wav", VOICE)}, data=data, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["task_id"]


def status(url: str, task_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/tasks/edit/status", params={"task_id": task_id}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_until(check: Callable[[], bool], timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_submitted_edit_reports_rising_progress_and_its_audio_is_kept(served: Served) -> None:
    served.slow_steps(0.01)
    try:
        task_id = submit_edit(served.url, n_edit_iter="2", response_format="wav")
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["status"] in ("pending", "in_progress"):
            seen.append(status(served.url, task_id))
            time.sleep(0.05)
    finally:
        served.slow_steps(0)
    final = seen[-1]
    assert final["status"] == "completed", final
    fractions = [s["progress"] for s in seen]
    assert fractions == sorted(fractions) and final["progress"] == 1.0
    assert len(set(fractions)) >= 3, seen  # it was seen on its way, not only at the end
    assert any("pass 2/2" in s["stage"] for s in seen), [s["stage"] for s in seen]
    assert final["media_type"] == "audio/wav" and final["expires_in_s"] > 590

    got = httpx.get(f"{served.url}/tasks/edit/get", params={"task_id": task_id}, timeout=30)
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
    assert len(got.content) == final["result_bytes"] and got.headers["x-editx-iterations"] == "2"
    samples, rate = decode(got.content)
    assert rate == 24000 and samples.size > 0
    captions = httpx.get(f"{served.url}/tasks/edit/get", params={"task_id": task_id, "captions": "true"}).json()
    assert captions["task_id"] == task_id and isinstance(captions["captions"], list)

    # The same result again: kept, not consumed.
    assert httpx.get(f"{served.url}/tasks/edit/get", params={"task_id": task_id}).content == got.content


def test_cancel_aborts_the_running_job_within_a_step(served: Served) -> None:
    engine = served.instance.engine
    served.slow_steps(0.03)
    try:
        before = engine.scheduler_stats()
        task_id = submit_edit(served.url, n_edit_iter="5")
        assert wait_until(lambda: engine.scheduler_stats().generated_tokens > before.generated_tokens + 5)
        cancelled = httpx.put(f"{served.url}/tasks/edit/cancel", params={"task_id": task_id}, timeout=30)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "canceled", cancelled.text
        assert wait_until(lambda: engine.scheduler_stats().aborted == before.aborted + 1, timeout=10)
        stopped = engine.scheduler_stats()
        assert stopped.running == 0
        time.sleep(0.3)
        assert engine.scheduler_stats().generated_tokens == stopped.generated_tokens  # nothing more made
        assert stopped.generated_tokens - before.generated_tokens < 5 * 60  # far from its five passes
    finally:
        served.slow_steps(0)
    assert status(served.url, task_id)["status"] == "canceled"
    got = httpx.get(f"{served.url}/tasks/edit/get", params={"task_id": task_id})
    assert got.status_code == 409 and "cancelled" in got.json()["error"] and got.json()["field"] == "task_id"
    again = httpx.put(f"{served.url}/tasks/edit/cancel", params={"task_id": task_id})
    assert again.status_code == 200  # cancelling twice changes nothing


def test_finished_tasks_expire_and_the_oldest_results_go_first(served: Served) -> None:
    store = served.instance.tasks
    assert store.ttl_s == 600 and store.max_bytes == 64 * 2**20  # EDITX_TASK_TTL_S, EDITX_TASK_MAX_MB
    first = submit_edit(served.url)
    assert wait_until(lambda: status(served.url, first)["status"] == "completed")
    size = status(served.url, first)["result_bytes"]
    saved_max, saved_clock = store.max_bytes, store.clock
    store.max_bytes = size + size // 2  # room for one result of this size, not two
    try:
        second = submit_edit(served.url, seed="2")
        assert wait_until(lambda: status(served.url, second)["status"] == "completed")
        gone = httpx.get(f"{served.url}/tasks/edit/get", params={"task_id": first})
        assert gone.status_code == 404 and first in gone.json()["error"], gone.text
        assert httpx.get(f"{served.url}/tasks/edit/get", params={"task_id": second}).status_code == 200

        store.clock = lambda: saved_clock() + 601  # an hour later: EDITX_TASK_TTL_S has passed
        for action in ("status", "get"):
            expired = httpx.get(f"{served.url}/tasks/edit/{action}", params={"task_id": second})
            assert expired.status_code == 404 and second in expired.json()["error"], expired.text
    finally:
        store.max_bytes, store.clock = saved_max, saved_clock


def test_bad_input_gets_a_4xx_never_a_5xx(served: Served) -> None:
    url = served.url
    # Refused at submit, before a task exists: a missing file, an unknown format.
    r = httpx.post(f"{url}/tasks/edit/submit", files={"edit_type": (None, "vad")})
    assert r.status_code == 400 and r.json()["field"] == "audio", r.text
    r = httpx.post(f"{url}/tasks/edit/submit", data={"edit_type": "vad"})
    assert r.status_code == 415, r.text
    r = httpx.post(f"{url}/tasks/edit/submit", files={"audio": ("v.wav", VOICE)},
                   data={"edit_type": "vad", "response_format": "midi"})
    assert r.status_code == 400 and r.json()["field"] == "response_format", r.text
    # Found once the task runs: the task fails and says why; get answers that error.
    bad = submit_edit(url, edit_type="colour")
    assert wait_until(lambda: status(url, bad)["status"] == "failed")
    failed = status(url, bad)
    assert failed["error_status"] == 400 and failed["error"]["field"] == "edit_type", failed
    got = httpx.get(f"{url}/tasks/edit/get", params={"task_id": bad})
    assert got.status_code == 400 and "colour" in got.json()["error"]
    not_audio = httpx.post(f"{url}/tasks/edit/submit", files={"audio": ("v.wav", b"not audio")},
                           data={"edit_type": "vad"}).json()["task_id"]
    assert wait_until(lambda: status(url, not_audio)["status"] == "failed")
    assert status(url, not_audio)["error"]["field"] == "audio"
    # Unknown ids, a missing id, an id of the other task, cancelling a finished task.
    for method, action in (("GET", "status"), ("GET", "get"), ("PUT", "cancel"), ("POST", "retry")):
        r = httpx.request(method, f"{url}/tasks/edit/{action}", params={"task_id": "nope"})
        assert r.status_code == 404 and "'nope'" in r.json()["error"], (action, r.text)
        r = httpx.request(method, f"{url}/tasks/edit/{action}")
        assert r.status_code == 400 and r.json()["field"] == "task_id", (action, r.text)
    r = httpx.get(f"{url}/tasks/clone/status", params={"task_id": bad})
    assert r.status_code == 404, r.text
    r = httpx.put(f"{url}/tasks/edit/cancel", params={"task_id": bad})
    assert r.status_code == 409 and "already failed" in r.json()["error"]


def test_a_clone_task_read_by_bentomls_client(served: Served) -> None:
    """A clone as a task; BentoML's own client reads its status and result (its submit is broken in 1.4.40)."""
    import bentoml
    from _bentoml_impl.client.task import Task

    r = httpx.post(f"{served.url}/tasks/clone/submit", files={"prompt_audio": ("voice.wav", VOICE)},
                   data={"target_text": "A clone that outlives its request.", "prompt_text": TEXT, "seed": "3",
                         "response_format": "flac"}, timeout=60)
    assert r.status_code == 200, r.text
    with bentoml.SyncHTTPClient(served.url, timeout=120) as client:
        task = Task(r.json()["task_id"], client.endpoints["clone_task"], client)
        assert wait_until(lambda: task.get_status().value == "completed"), task.get_status()
        samples, rate = decode(Path(task.get()).read_bytes())
        assert rate == 24000 and samples.size > 0


def test_a_dialogue_job_runs_as_a_task_the_same_way(served: Served) -> None:
    """The task body does not care which job it runs: a dialogue's progress, audio and captions reach the store."""
    from types import SimpleNamespace

    import anyio

    from api.native.tasks import run_task
    from runners.jobs import DialogueJob, Turn

    r = httpx.post(f"{served.url}/v1/audio/voices", files={"audio": ("v.wav", VOICE)},
                   data={"name": "taskvoice", "text": TEXT}, timeout=120)
    assert r.status_code == 201, r.text
    job = DialogueJob((Turn("Hello there.", "taskvoice"), Turn("Hello to you.", "taskvoice")), seed=4)
    request = SimpleNamespace(state=SimpleNamespace(task_id="dialogue-1"))

    async def make() -> DialogueJob:
        return job

    store, engine = served.instance.tasks, served.instance.engine
    anyio.run(run_task, engine, store, request, "dialogue_task", make, "wav")
    entry = store.result("dialogue-1")
    assert entry.fraction == 1.0 and entry.result is not None
    samples, rate = decode(entry.result.body)
    assert rate == 24000 and samples.size > 0
    assert [c.turn for c in entry.result.captions] == [0, 1], entry.result.captions
