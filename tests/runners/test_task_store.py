"""The task store alone: expiry, the size bound (oldest finished first), cancel, progress, results."""

from __future__ import annotations

import pytest

from runners.errors import ConflictError, InputTooLargeError, NotFoundError
from runners.tasks import TaskResult, TaskState, TaskStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def finished(store: TaskStore, task_id: str, size: int) -> None:
    store.start(task_id, "edit_task")
    store.finish(task_id, TaskResult(b"x" * size, "audio/wav"))


def test_a_finished_task_is_forgotten_after_its_ttl_and_the_id_is_named() -> None:
    clock, dropped = Clock(), []
    store = TaskStore(ttl_s=60, max_bytes=1000, on_drop=dropped.extend, clock=clock)
    finished(store, "a", 10)
    clock.now += 59
    assert store.result("a").result.body == b"x" * 10
    clock.now += 1
    with pytest.raises(NotFoundError, match="'a'"):
        store.get("a")
    assert dropped == ["a"]


def test_results_over_the_size_bound_push_out_the_oldest_finished_first() -> None:
    clock = Clock()
    store = TaskStore(ttl_s=3600, max_bytes=250, clock=clock)
    store.start("running", "edit_task")  # a running task is never dropped
    for name in ("a", "b", "c"):
        finished(store, name, 100)
        clock.now += 1
    assert store.result_bytes == 200
    with pytest.raises(NotFoundError):
        store.get("a")
    assert {store.get(n).state for n in ("b", "c")} == {TaskState.COMPLETED}
    assert store.get("running").state is TaskState.IN_PROGRESS
    store.start("huge", "edit_task")
    store.finish("huge", TaskResult(b"x" * 251, "audio/wav"))  # could never be kept: fails, drops nothing
    with pytest.raises(InputTooLargeError, match="EDITX_TASK_MAX_MB"):
        store.result("huge")
    assert store.result_bytes == 200


def test_cancel_sets_the_event_and_a_finished_task_cannot_be_cancelled() -> None:
    store = TaskStore(ttl_s=60, max_bytes=1000)
    entry = store.start("t", "edit_task")
    store.progress("t")("generating", 0.5)
    store.progress("t")("decoding", 0.4)  # never goes back
    assert (entry.stage, entry.fraction) == ("decoding", 0.5)
    assert store.cancel("t").cancel.is_set() and entry.state is TaskState.CANCELED
    store.finish("t", TaskResult(b"late", "audio/wav"))  # the job's last words after the cancel are dropped
    with pytest.raises(ConflictError, match="cancelled"):
        store.result("t")
    finished(store, "done", 5)
    with pytest.raises(ConflictError, match="already completed"):
        store.cancel("done")
    pending = store.create("p", "edit_task")
    store.cancel("p")
    assert store.start("p", "edit_task").cancel.is_set() and pending.state is TaskState.CANCELED
