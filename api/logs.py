"""Recent log records kept in memory, so the service can show them (UI log panel, /logs).

A ``logging.Handler`` with a bounded ring buffer: records are captured as
structured objects when they are emitted, so nothing ever parses a log file,
and memory stays bounded however long the process runs. Fields passed with
``extra=`` (``request_id``, ``stage``, ``seconds``, anything else JSON-like)
are kept alongside the message.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections import deque
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from runners.errors import InvalidInputError

DEFAULT_CAPACITY = 1000
ACCESS_LOGGER = "bentoml.access"  # BentoML's per-request access log

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
    "FATAL": logging.CRITICAL,
}


class LogRecordOut(BaseModel):
    """One log record as an API returns it."""

    time: str = Field(description="ISO 8601, UTC, millisecond precision")
    created: float = Field(description="Unix time; pass it back as `since` to get only newer records")
    level: str
    logger: str
    message: str
    request_id: str | None = None
    stage: str | None = None
    seconds: float | None = None
    exception: str | None = Field(None, description="formatted traceback, when the record carried one")
    extra: dict[str, Any] = Field(default_factory=dict, description="other fields passed with extra=")


def parse_level(level: str | int) -> int:
    """'warning' / 'WARNING' / 30 → 30; unknown names are an InvalidInputError on ``min_level``."""
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    if name.isdigit():
        return int(name)
    if name not in _LEVELS:
        raise InvalidInputError(
            f"unknown log level {level!r}; use one of debug, info, warning, error, critical", field="min_level"
        )
    return _LEVELS[name]


def _json_value(value: Any) -> Any:
    """Keep JSON scalars (and lists/dicts of them); anything else becomes its str()."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def to_record_out(record: logging.LogRecord) -> LogRecordOut:
    extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}
    request_id = extras.pop("request_id", None)
    stage = extras.pop("stage", None)
    seconds = extras.pop("seconds", None)
    try:
        seconds = float(seconds) if seconds is not None else None
    except (TypeError, ValueError):
        extras["seconds"], seconds = str(seconds), None
    try:
        message = record.getMessage()
    except Exception:  # a bad %-format must not lose the record
        message = f"{record.msg!r} % {record.args!r}"
    exception = None
    if record.exc_info and record.exc_info[0] is not None:
        exception = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    elif record.exc_text:
        exception = record.exc_text
    return LogRecordOut(
        time=datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
        created=record.created,
        level=record.levelname,
        logger=record.name,
        message=message,
        request_id=None if request_id is None else str(request_id),
        stage=None if stage is None else str(stage),
        seconds=seconds,
        exception=exception,
        extra={k: _json_value(v) for k, v in extras.items()},
    )


# Access-log paths that would drown the panel: UI assets and polling, health probes, the log itself.
QUIET_PATHS: tuple[str, ...] = ("/ui/", "/healthz", "/livez", "/readyz", "/metrics", "/logs", "/status")
_ACCESS_PATH = re.compile(r"path=([^,)\s]+)")


class QuietAccessFilter(logging.Filter):
    """Drops BentoML access records for ``QUIET_PATHS``; the API calls users make stay."""

    def __init__(self, quiet_paths: tuple[str, ...] = QUIET_PATHS) -> None:
        super().__init__()
        self.quiet_paths = quiet_paths

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != ACCESS_LOGGER:
            return True
        match = _ACCESS_PATH.search(record.getMessage())
        return not (match and match.group(1).startswith(self.quiet_paths))


class LogBuffer(logging.Handler):
    """Thread-safe ring buffer of the last ``capacity`` records."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, level: int | str = logging.INFO) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        super().__init__(parse_level(level))
        self.capacity = capacity
        self._records: deque[tuple[int, LogRecordOut]] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        # Attached to a logger and to its ancestor, one record reaches us twice: keep it once.
        if getattr(record, "_log_buffer_seen", None) is self:
            return
        record._log_buffer_seen = self
        try:
            item = (record.levelno, to_record_out(record))
        except Exception:
            self.handleError(record)
            return
        with self.lock:  # Handler.handle() holds it too; taken again so direct emit() calls are safe
            self._records.append(item)

    def records(
        self, limit: int = 100, min_level: str | int | None = None, since: float | None = None
    ) -> list[LogRecordOut]:
        """The newest ``limit`` records at ``min_level`` or above, created after ``since``; newest last."""
        if limit < 0:
            raise InvalidInputError("limit must be 0 or more", field="limit")
        floor = parse_level(min_level) if min_level is not None else logging.NOTSET
        with self.lock:
            items = list(self._records)
        picked = [r for lvl, r in items if lvl >= floor and (since is None or r.created > since)]
        return picked[-limit:] if limit else []

    def clear(self) -> None:
        with self.lock:
            self._records.clear()

    def __len__(self) -> int:
        with self.lock:
            return len(self._records)


_installed: LogBuffer | None = None
_install_lock = threading.Lock()


def install(
    logger_name: str = "editx",
    capacity: int = DEFAULT_CAPACITY,
    level: int | str = logging.INFO,
    include_access_log: bool = False,
) -> LogBuffer:
    """Attach the process-wide LogBuffer to ``logger_name`` (idempotent) and return it.

    The first call creates the buffer (``capacity``/``level`` apply then);
    later calls return the same buffer and only attach it to loggers it is not
    on yet, so handlers are never duplicated. If a logger's effective level
    would drop records at ``level`` (the stdlib default is WARNING), its level
    is lowered to ``level``. ``include_access_log`` also captures BentoML's
    per-request access log (``bentoml.access``).
    """
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = LogBuffer(capacity=capacity, level=level)
            _installed.addFilter(QuietAccessFilter())
        buffer = _installed
        names = [logger_name] + ([ACCESS_LOGGER] if include_access_log else [])
        for name in names:
            logger = logging.getLogger(name)
            if buffer not in logger.handlers:
                logger.addHandler(buffer)
            if logger.getEffectiveLevel() > buffer.level:
                logger.setLevel(buffer.level)
            logger.disabled = False
            _enable_children(name)
        return buffer


def _enable_children(name: str) -> None:
    """Re-enable ``name``'s child loggers too: a ``logging.config.dictConfig`` run by a library after our
    modules were imported (``disable_existing_loggers``; ``bentoml.serve`` does it in the calling
    process) silences them, and their records never arrive."""
    for child_name, child in list(logging.root.manager.loggerDict.items()):
        if child_name.startswith(name + ".") and isinstance(child, logging.Logger):
            child.disabled = False


def installed() -> LogBuffer | None:
    """The process-wide buffer, or None before :func:`install` ran."""
    return _installed
