"""The UI's Stop: cancelling a running Gradio event sets the engine call's cancel event at once."""

from __future__ import annotations

import asyncio
import threading

from ui.app import cancellable


def test_cancelling_the_event_sets_cancel_while_the_call_still_runs() -> None:
    seen: dict[str, threading.Event] = {}
    released = threading.Event()

    def engine_call(cancel: threading.Event) -> str:
        seen["cancel"] = cancel
        cancel.wait(10)  # what the engine does: it notices within one step and aborts
        released.set()
        return "aborted" if cancel.is_set() else "finished"

    async def scenario() -> None:
        task = asyncio.ensure_future(cancellable(engine_call))
        while "cancel" not in seen:
            await asyncio.sleep(0.01)
        task.cancel()  # what Gradio does when Stop is pressed or the page goes away
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(scenario())
    assert seen["cancel"].is_set()
    assert released.wait(5)  # the worker thread ended promptly instead of running to the end


def test_an_uncancelled_call_returns_its_result() -> None:
    assert asyncio.run(cancellable(lambda cancel: "done")) == "done"
