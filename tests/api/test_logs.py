"""LogBuffer: what a /logs endpoint or the UI log panel would show."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from api import logs as lb
from runners.errors import InvalidInputError
from api.logs import LogBuffer, install


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, LogBuffer]]:
    """A private logger with a fresh buffer; detached afterwards."""
    log = logging.getLogger(f"editx.test.{time.perf_counter_ns()}")
    log.setLevel(logging.DEBUG)
    buf = LogBuffer(capacity=50, level=logging.DEBUG)
    log.addHandler(buf)
    yield log, buf
    log.removeHandler(buf)


@pytest.fixture
def fresh_singleton(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run install() as if in a new process, and undo what it attached."""
    names = ["editx", "editx.engine", lb.ACCESS_LOGGER]
    levels = {n: logging.getLogger(n).level for n in names}
    before = {n: list(logging.getLogger(n).handlers) for n in names}
    monkeypatch.setattr(lb, "_installed", None)
    for n in names:  # no buffer of an earlier test (or of an imported service) stays attached
        logging.getLogger(n).handlers = []
    yield
    for n in names:
        logging.getLogger(n).handlers = before[n]
        logging.getLogger(n).setLevel(levels[n])


def test_records_carry_message_level_and_extra_fields(logger: tuple[logging.Logger, LogBuffer]) -> None:
    log, buf = logger
    log.info("cloned %d s of audio", 4, extra={"request_id": "req-1", "stage": "llm", "seconds": 1.25, "tokens": 170})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("edit failed", extra={"request_id": "req-2"})
    first, second = buf.records()
    assert first.message == "cloned 4 s of audio" and first.level == "INFO" and first.logger == log.name
    assert (first.request_id, first.stage, first.seconds) == ("req-1", "llm", 1.25)
    assert first.extra == {"tokens": 170}
    assert datetime.fromisoformat(first.time).tzinfo is not None
    assert abs(first.created - time.time()) < 60
    assert second.level == "ERROR" and second.request_id == "req-2"
    assert "RuntimeError: boom" in (second.exception or "")
    assert second.model_dump_json()  # everything serializes for an API


def test_capacity_keeps_the_newest(logger: tuple[logging.Logger, LogBuffer]) -> None:
    log, buf = logger
    for i in range(120):
        log.info("line %d", i)
    assert len(buf) == 50
    got = buf.records(limit=1000)
    assert [r.message for r in got] == [f"line {i}" for i in range(70, 120)]  # newest last


def test_limit_level_and_since_filters(logger: tuple[logging.Logger, LogBuffer]) -> None:
    log, buf = logger
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [r.message for r in buf.records(limit=2)] == ["w", "e"]
    assert [r.message for r in buf.records(min_level="warning")] == ["w", "e"]
    assert [r.message for r in buf.records(min_level="INFO", limit=1)] == ["e"]
    assert buf.records(limit=0) == []
    cut = buf.records()[-1].created
    time.sleep(0.01)
    log.critical("c")
    assert [r.message for r in buf.records(since=cut)] == ["c"]
    with pytest.raises(InvalidInputError) as err:
        buf.records(min_level="loud")
    assert err.value.field == "min_level"


def test_threads_logging_at_once_lose_nothing(logger: tuple[logging.Logger, LogBuffer]) -> None:
    log, _ = logger
    buf = LogBuffer(capacity=10_000)
    log.addHandler(buf)
    try:

        def work(t: int) -> None:
            for i in range(500):
                log.info("t%d-%d", t, i)
                if i % 100 == 0:
                    buf.records(limit=10)  # reads while others write

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        messages = {r.message for r in buf.records(limit=10_000)}
        assert len(messages) == 4000
    finally:
        log.removeHandler(buf)


def test_install_is_an_idempotent_singleton(fresh_singleton: None) -> None:
    first = install()
    again = install("editx", capacity=5)
    assert first is again and first.capacity == lb.DEFAULT_CAPACITY
    editx = logging.getLogger("editx")
    assert editx.handlers.count(first) == 1
    assert lb.installed() is first
    install(include_access_log=True)
    assert logging.getLogger(lb.ACCESS_LOGGER).handlers.count(first) == 1

    # INFO from any editx.* module is captured even though stdlib defaults to WARNING
    logging.getLogger("editx.engine").info("engine loaded", extra={"stage": "load", "seconds": 2.0})
    logging.getLogger(lb.ACCESS_LOGGER).info("POST /clone 200")
    got = first.records(limit=2)
    assert [(r.logger, r.message) for r in got] == [
        ("editx.engine", "engine loaded"),
        (lb.ACCESS_LOGGER, "POST /clone 200"),
    ]

    # attaching to a child as well never stores a record twice
    install("editx.engine")
    logging.getLogger("editx.engine").warning("once")
    assert [r.message for r in first.records(limit=2)] == ["POST /clone 200", "once"]


def test_ui_assets_and_probes_stay_out_of_the_panel(fresh_singleton: None) -> None:
    buf = install(include_access_log=True)
    access = logging.getLogger(lb.ACCESS_LOGGER)
    for path in ("/ui/assets/index.js", "/readyz", "/metrics", "/logs", "/status", "/clone", "/edit"):
        access.info("127.0.0.1:5000 (scheme=http,method=GET,path=%s,type=,length=) (status=200)", path)
    kept = [r.message for r in buf.records(limit=10) if r.logger == lb.ACCESS_LOGGER]
    assert [m.split("path=")[1].split(",")[0] for m in kept] == ["/clone", "/edit"]
