"""Jobs that outlive a request: their state, progress, cancel switch and finished results, bounded.

A job submitted as a task runs after its submitting request was answered; the client comes back
for its progress and its result. :class:`TaskStore` keeps, per task id: the state, the stage and
fraction the engine last reported (its ``progress`` callback), the ``cancel`` event handed to
``engine.run`` (set, the engine aborts the job's requests within one step), and once finished the
encoded answer. Finished tasks are kept at most ``ttl_s`` seconds and their results at most
``max_bytes`` together (oldest finished first out); a task that is gone is unknown. Nothing here
knows HTTP: errors are the engine's own (``runners.errors``), rendered at the edge.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from runners.errors import ConflictError, InputTooLargeError, NotFoundError
from runners.pipeline.chunks import Caption

log = logging.getLogger("editx.tasks")


class TaskState(str, enum.Enum):
    """A task's state; the values are BentoML's ``ResultStatus`` ones, so its client reads them."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELED)


@dataclass(frozen=True)
class TaskResult:
    """A finished task's answer, already encoded (what the client asked for), and its captions."""

    body: bytes
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)
    captions: tuple[Caption, ...] = ()

    @property
    def nbytes(self) -> int:
        return len(self.body)


@dataclass
class TaskEntry:
    """One task as the store keeps it (read under the store's lock, or through :meth:`TaskStore.view`)."""

    task_id: str
    name: str
    created_at: float  # wall clock (time.time), for the client
    state: TaskState = TaskState.PENDING
    stage: str = "queued"
    fraction: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    started_at: float | None = None
    finished_at: float | None = None  # wall clock
    finished_mono: float | None = None  # the store's clock: what expiry counts from
    result: TaskResult | None = None
    error: Exception | None = None  # a user error (runners.errors) that failed the task


class TaskStore:
    """Every task of this process by id; thread-safe (the engine reports progress from its threads).

    ``on_drop`` is told the ids of tasks dropped for age or size (the HTTP layer forgets its own
    records of them). ``clock`` is monotonic seconds (tests move it).
    """

    def __init__(self, ttl_s: float, max_bytes: int, on_drop: Callable[[list[str]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.on_drop = on_drop
        self.clock = clock
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskEntry] = {}

    # ------------------------------------------------------------ lifecycle
    def create(self, task_id: str, name: str) -> TaskEntry:
        """Register a submitted task (pending); an id already known is left as it is."""
        with self._lock:
            entry = self._tasks.get(task_id)
            if entry is None:
                entry = self._tasks[task_id] = TaskEntry(task_id, name, time.time())
        self.sweep()
        return entry

    def start(self, task_id: str, name: str) -> TaskEntry:
        """The task begins to run (unless it was cancelled while it waited: then its event is set)."""
        entry = self.create(task_id, name)
        with self._lock:
            if entry.state is TaskState.PENDING:
                entry.state, entry.started_at, entry.stage = TaskState.IN_PROGRESS, time.time(), "starting"
        return entry

    def progress(self, task_id: str) -> Callable[[str, float], None]:
        """The engine's progress callback for this task: the stage text and a fraction that never goes back."""
        def report(stage: str, fraction: float) -> None:
            with self._lock:
                entry = self._tasks.get(task_id)
                if entry is None or entry.state is not TaskState.IN_PROGRESS:
                    return
                entry.stage = stage
                entry.fraction = max(entry.fraction, min(1.0, max(0.0, float(fraction))))
        return report

    def finish(self, task_id: str, result: TaskResult) -> None:
        """Keep a finished task's answer (dropped if the task was cancelled meanwhile).

        A result larger than the whole budget fails the task instead (it could never be kept).
        """
        if result.nbytes > self.max_bytes:
            self.fail(task_id, InputTooLargeError(
                f"the result is {result.nbytes / 2**20:.1f} MiB, over the {self.max_bytes / 2**20:.1f} MiB kept "
                "for task results (EDITX_TASK_MAX_MB)", field="task_id"))
            return
        with self._lock:
            entry = self._tasks.get(task_id)
            if entry is None or entry.state.finished:
                return
            entry.state, entry.result, entry.stage, entry.fraction = TaskState.COMPLETED, result, "done", 1.0
            self._mark_finished(entry)
        self.sweep()

    def fail(self, task_id: str, error: Exception) -> None:
        """The task ended with ``error`` (a user error, or a stand-in for a bug); a cancelled one stays cancelled."""
        with self._lock:
            entry = self._tasks.get(task_id)
            if entry is None or entry.state.finished:
                return
            entry.state, entry.error, entry.stage = TaskState.FAILED, error, "failed"
            self._mark_finished(entry)
        self.sweep()

    def cancel(self, task_id: str) -> TaskEntry:
        """Stop a pending or running task: its cancel event is set (the engine aborts its requests).

        Cancelling a cancelled task changes nothing; a task that already finished is a conflict.
        """
        entry = self.get(task_id)
        with self._lock:
            if entry.state in (TaskState.COMPLETED, TaskState.FAILED):
                raise ConflictError(f"task {task_id} has already {entry.state.value}; nothing to cancel",
                                    field="task_id")
            if entry.state is not TaskState.CANCELED:
                entry.cancel.set()
                entry.state, entry.stage = TaskState.CANCELED, "cancelled"
                self._mark_finished(entry)
        log.info("task %s (%s) cancelled", task_id, entry.name, extra={"stage": "request"})
        return entry

    def _mark_finished(self, entry: TaskEntry) -> None:
        entry.finished_at, entry.finished_mono = time.time(), self.clock()

    # ------------------------------------------------------------ reading
    def get(self, task_id: str) -> TaskEntry:
        """The task, or :class:`NotFoundError` naming the id (never known, or dropped for age or size)."""
        self.sweep()
        with self._lock:
            entry = self._tasks.get(task_id)
        if entry is None:
            raise NotFoundError(f"no task {task_id!r}: unknown, or finished more than {self.ttl_s:g} s ago "
                                "(EDITX_TASK_TTL_S) or pushed out by newer results (EDITX_TASK_MAX_MB)",
                                field="task_id")
        return entry

    def result(self, task_id: str) -> TaskEntry:
        """A task that completed, with its result; otherwise a conflict that says where it stands."""
        entry = self.get(task_id)
        if entry.state is TaskState.COMPLETED and entry.result is not None:
            return entry
        if entry.state is TaskState.FAILED and entry.error is not None:
            raise entry.error
        if entry.state is TaskState.CANCELED:
            raise ConflictError(f"task {task_id} was cancelled: it has no result", field="task_id")
        raise ConflictError(f"task {task_id} is {entry.state.value.replace('_', ' ')} "
                            f"({entry.stage}, {entry.fraction:.0%}); ask again when it has completed",
                            field="task_id")

    @property
    def result_bytes(self) -> int:
        with self._lock:
            return sum(e.result.nbytes for e in self._tasks.values() if e.result is not None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tasks)

    # ------------------------------------------------------------ bounds
    def sweep(self) -> list[str]:
        """Drop finished tasks older than ``ttl_s``, then the oldest results until they fit ``max_bytes``."""
        now = self.clock()
        dropped: list[str] = []
        with self._lock:
            finished = sorted((e for e in self._tasks.values() if e.finished_mono is not None),
                              key=lambda e: e.finished_mono or 0.0)
            for entry in finished:
                if now - (entry.finished_mono or now) >= self.ttl_s:
                    dropped.append(entry.task_id)
            total = sum(e.result.nbytes for e in finished if e.result is not None and e.task_id not in dropped)
            for entry in finished:
                if total <= self.max_bytes:
                    break
                if entry.result is not None and entry.task_id not in dropped:
                    dropped.append(entry.task_id)
                    total -= entry.result.nbytes
            for task_id in dropped:
                del self._tasks[task_id]
        if dropped:
            log.info("dropped %d finished task(s) for age or size", len(dropped))
            if self.on_drop is not None:
                self.on_drop(dropped)
        return dropped
