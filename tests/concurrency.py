"""Run a call from several threads at once (not a test module)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def race(call: Callable[[int], T], n: int) -> list[T | BaseException]:
    """``call(0..n-1)`` from ``n`` threads released together by a barrier; results or exceptions, in order.

    The barrier makes the calls really arrive at the same moment, however slowly the threads start.
    """
    barrier = threading.Barrier(n)
    results: list[T | BaseException] = [RuntimeError("never ran")] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's assertion
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
